/**
 * AWS errors, read one way: the exception name of anything the SDK (or fetch) throws, which
 * names are worth retrying, the Java-style messages of bulk ERRORS reports taken apart, and
 * the one wrapper that turns an AWS failure into a ProvlineError with AWS's own message.
 *
 * Branch on names, never on message text; the one exception is the "task already in
 * progress" answer of StartThingRegistrationTask, which AWS gives as a plain
 * InvalidRequestException (aws-iot.md §1.5).
 */
import { ProvlineError, messageOf, type ErrorCode, type ErrorKind } from '../core/index.js';

/** Throttling: the call was refused before it did anything, so any call may be repeated. */
const THROTTLING = new Set([
  'ThrottlingException',
  'Throttling',
  'ThrottledException',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'RequestThrottled',
  'RequestThrottledException',
  'SlowDown',
  'ProvisionedThroughputExceededException',
  // IoT answers its control-plane rate limits with 410 LimitExceededException; the SDK, too,
  // treats it as throttling (aws-iot.md §5.1). It is also used for hard limits (10 policies
  // on a certificate): a real limit fails again after the retries.
  'LimitExceededException',
]);

/** Server-side and network failures: worth retrying, but the call may have taken effect. */
const TRANSIENT = new Set([
  'InternalFailureException',
  'InternalFailure',
  'InternalError',
  'InternalServerError',
  'InternalServerException',
  'ServiceUnavailableException',
  'ServiceUnavailable',
  'RequestTimeout',
  'RequestTimeoutException',
  'TimeoutError',
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
]);

const NOT_FOUND = new Set(['ResourceNotFoundException', 'NoSuchKey', 'NotFound', 'NoSuchBucket']);

function field(e: unknown, key: string): unknown {
  return typeof e === 'object' && e !== null ? (e as Record<string, unknown>)[key] : undefined;
}

/**
 * The AWS exception name of `e` (`ThrottlingException`, `NoSuchKey`, …); for network errors
 * the system error code (`ECONNRESET`, `UND_ERR_SOCKET`, also inside fetch's `cause`);
 * otherwise the error's name, or `UnknownError`.
 */
export function awsErrorName(e: unknown): string {
  const name = field(e, 'name');
  const hasMetadata = field(e, '$metadata') !== undefined;
  if (hasMetadata && typeof name === 'string' && name && name !== 'Error') return name;
  for (let cur: unknown = e, depth = 0; cur !== undefined && depth < 4; cur = field(cur, 'cause'), depth++) {
    const code = field(cur, 'code');
    if (typeof code === 'string' && /^[A-Z][A-Z0-9_]+$/.test(code)) return code;
  }
  if (typeof name === 'string' && name) return name;
  return 'UnknownError';
}

/** The HTTP status of an SDK error, if it has one. */
export function awsErrorStatus(e: unknown): number | undefined {
  const status = field(field(e, '$metadata'), 'httpStatusCode');
  return typeof status === 'number' ? status : undefined;
}

export function isThrottlingAwsError(name: string): boolean {
  return THROTTLING.has(name);
}

/** True for throttling, limit, 5xx-style and network failures: a later attempt may succeed. */
export function isRetryableAwsError(name: string): boolean {
  return THROTTLING.has(name) || TRANSIENT.has(name);
}

export function isNotFoundAwsError(e: unknown): boolean {
  return NOT_FOUND.has(awsErrorName(e)) || awsErrorStatus(e) === 404;
}

/** AWS's message of an SDK error (without the exception name). */
export function awsMessage(e: unknown): string {
  const m = messageOf(e);
  return m || awsErrorName(e);
}

export interface AwsFailureOptions {
  kind?: ErrorKind;
  hint?: string;
  details?: Record<string, unknown>;
}

/**
 * A ProvlineError for a failed AWS call: `<what>: <AWS message> (<ExceptionName>)`, retryable
 * when the exception is, details `{operation, errorName, httpStatus?, requestId?}`.
 */
export function awsFailure(
  code: ErrorCode,
  what: string,
  e: unknown,
  o: AwsFailureOptions = {},
): ProvlineError {
  if (e instanceof ProvlineError) return e;
  const errorName = awsErrorName(e);
  const httpStatus = awsErrorStatus(e);
  const requestId = field(field(e, '$metadata'), 'requestId');
  return new ProvlineError(code, `${what}: ${awsMessage(e)} (${errorName})`, {
    kind: o.kind ?? 'failed',
    retryable: isRetryableAwsError(errorName) || (httpStatus !== undefined && httpStatus >= 500),
    hint: o.hint,
    details: {
      operation: what,
      errorName,
      ...(httpStatus === undefined ? {} : { httpStatus }),
      ...(typeof requestId === 'string' ? { requestId } : {}),
      ...o.details,
    },
    cause: e,
  });
}

export interface ReportError {
  /** The exception's simple name, e.g. `ResourceRegistrationFailureException`. */
  errorName: string;
  /** The human part of the message. */
  message: string;
  statusCode?: number;
  requestId?: string;
}

const SERVICE_TAIL =
  /\s*\(Service: [^;()]*; Status Code: (\d+); Error Code: ([^;()\s]+)(?:; Request ID: ([^;()\s]*))?[^()]*\)\s*$/;
const CLASS_HEAD = /^((?:[A-Za-z_$][\w$]*\.)*([A-Za-z_$][\w$]*)):\s*/;

/**
 * Takes apart an ERRORS report message (aws-iot.md §1.3, OBSERVED):
 * `com.amazonaws.services.iot.model.<Name>: <message> (Service: AWSIot; Status Code: n;
 * Error Code: <Name>; Request ID: …; Proxy: null)`. Other shapes are tolerated: a bare
 * `<Name>: <message>`, a message alone (errorName `UnknownError`), nothing at all.
 */
export function parseReportError(errorMessage: string | null | undefined): ReportError {
  let text = (errorMessage ?? '').trim();
  let errorName: string | undefined;
  let statusCode: number | undefined;
  let requestId: string | undefined;
  const tail = SERVICE_TAIL.exec(text);
  if (tail) {
    statusCode = Number(tail[1]);
    errorName = tail[2];
    requestId = tail[3] || undefined;
    text = text.slice(0, tail.index).trimEnd();
  }
  const head = CLASS_HEAD.exec(text);
  // A head counts as an exception class if it is qualified (a.b.C) or looks like one (…Exception).
  if (head && (head[1]!.includes('.') || /(Exception|Error|Fault)$/.test(head[2]!))) {
    errorName ??= head[2];
    text = text.slice(head[0].length);
  }
  return {
    errorName: errorName ?? 'UnknownError',
    message: text,
    ...(statusCode === undefined ? {} : { statusCode }),
    ...(requestId === undefined ? {} : { requestId }),
  };
}
