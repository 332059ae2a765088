/**
 * Bulk registration (StartThingRegistrationTask, aws-iot.md §1) as request/response calls:
 *
 *   renderInputFile → putInput (manifest first, then the NDJSON input) → startTask
 *   → waitTask → readReports (RESULTS and ERRORS, keyed by input line number)
 *
 * Line N (1-based) of the input file is `lines[N-1]` and `manifest.serials[N-1]`; reports are
 * mapped by their `lineNumber`, never by their position. A registrar that crashed after
 * starting a task but before recording its id finds it again with `findTaskByInputKey`.
 *
 * Only one task runs per account. `startTask` answers `busy` when another one is running, and
 * `started` with the running task's id when that task reads the very same input object (a
 * start whose answer was lost). After an ambiguous failure (5xx, network) it looks for its
 * own task before it tries again, so one input object never gets two tasks from one call.
 */
import {
  DescribeThingRegistrationTaskCommand,
  ListThingRegistrationTaskReportsCommand,
  ListThingRegistrationTasksCommand,
  StartThingRegistrationTaskCommand,
  type ReportType,
} from '@aws-sdk/client-iot';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { ProvlineError } from '../core/index.js';
import {
  awsErrorName,
  awsFailure,
  awsMessage,
  isNotFoundAwsError,
  isRetryableAwsError,
  isThrottlingAwsError,
  parseReportError,
} from './aws-errors.js';
import { issuedCertificate, type IssuedCertificate } from './certificates.js';
import type { CloudClients } from './clients.js';
import { backoff, sleepFor, withRetries } from './pacing.js';

// ---------------------------------------------------------------------------------------------
// Input file and manifest

/** One NDJSON line per entry, each ending in `\n`; no blank lines. */
export function renderInputFile(lines: Array<Record<string, string>>): Buffer {
  // JSON.stringify escapes every control character, so an entry can never span two lines.
  return Buffer.from(lines.map((l) => `${JSON.stringify(l)}\n`).join(''), 'utf8');
}

export interface Manifest {
  batchId: string;
  chunk: number;
  /** The serials in input-line order: line N is serials[N-1]. */
  serials: string[];
  /** ISO 8601. */
  createdAt: string;
}

export function manifestKey(inputKey: string): string {
  return `${inputKey}.manifest.json`;
}

export interface PutInputRequest {
  bucket: string;
  key: string;
  body: Buffer;
  manifest: Omit<Manifest, 'createdAt'> & { createdAt?: string };
}

function inputLines(body: Buffer): string[] {
  const text = body.toString('utf8');
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines;
}

/**
 * Writes `<key>.manifest.json` first, then the input object, so an input object always has
 * its manifest. The body must have exactly one non-blank line per serial.
 */
export async function putInput(c: CloudClients, r: PutInputRequest): Promise<Manifest> {
  const lines = inputLines(r.body);
  const blank = lines.findIndex((l) => !l.trim());
  if (blank >= 0 || lines.length !== r.manifest.serials.length)
    throw new ProvlineError(
      'REGISTRATION_INPUT_INVALID',
      blank >= 0
        ? `Input file line ${blank + 1} is blank; AWS skips blank lines, which would shift the line numbers`
        : `The input file has ${lines.length} lines but the manifest ${r.manifest.serials.length} serials`,
      { details: { key: r.key } },
    );
  const manifest: Manifest = { ...r.manifest, createdAt: r.manifest.createdAt ?? new Date().toISOString() };
  await putObject(c, r.bucket, manifestKey(r.key), Buffer.from(JSON.stringify(manifest)), 'application/json');
  await putObject(c, r.bucket, r.key, r.body, 'application/x-ndjson');
  return manifest;
}

async function putObject(
  c: CloudClients,
  bucket: string,
  key: string,
  body: Buffer,
  type: string,
): Promise<void> {
  await withRetries(
    () => c.s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentType: type })),
    { retry: 'transient', what: 'PutObject' },
  ).catch((e: unknown) => {
    throw awsFailure('AWS_REQUEST_FAILED', `PutObject s3://${bucket}/${key}`, e);
  });
}

/** The manifest of an input object; undefined when there is none. */
export async function readManifest(
  c: CloudClients,
  bucket: string,
  key: string,
): Promise<Manifest | undefined> {
  const mkey = manifestKey(key);
  let text: string;
  try {
    text = await withRetries(
      async () => {
        const out = await c.s3.send(new GetObjectCommand({ Bucket: bucket, Key: mkey }));
        return (await out.Body?.transformToString('utf8')) ?? '';
      },
      { retry: 'transient', what: 'GetObject' },
    );
  } catch (e) {
    if (isNotFoundAwsError(e)) return undefined;
    throw awsFailure('AWS_REQUEST_FAILED', `GetObject s3://${bucket}/${mkey}`, e);
  }
  const invalid = (why: string, cause?: unknown): ProvlineError =>
    new ProvlineError('REGISTRATION_MANIFEST_INVALID', `s3://${bucket}/${mkey}: ${why}`, {
      cause,
      details: { bucket, key: mkey },
    });
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch (e) {
    throw invalid('not JSON', e);
  }
  const o = (typeof m === 'object' && m !== null ? m : {}) as Record<string, unknown>;
  if (
    typeof o.batchId !== 'string' ||
    typeof o.chunk !== 'number' ||
    typeof o.createdAt !== 'string' ||
    !Array.isArray(o.serials) ||
    !o.serials.every((s) => typeof s === 'string')
  )
    throw invalid('expected {batchId, chunk, serials, createdAt}');
  return { batchId: o.batchId, chunk: o.chunk, serials: o.serials, createdAt: o.createdAt };
}

// ---------------------------------------------------------------------------------------------
// Tasks

export interface TaskDescription {
  taskId: string;
  status: string;
  message?: string;
  successCount: number;
  failureCount: number;
  percentageProgress: number;
  inputFileBucket?: string;
  inputFileKey?: string;
  creationDate?: Date;
}

async function describeTask(
  c: CloudClients,
  taskId: string,
  signal?: AbortSignal,
): Promise<TaskDescription | undefined> {
  try {
    const d = await withRetries(
      () => c.iot.send(new DescribeThingRegistrationTaskCommand({ taskId }), { abortSignal: signal }),
      { retry: 'transient', what: 'DescribeThingRegistrationTask', maxAttempts: 10, signal },
    );
    return {
      taskId,
      status: d.status ?? 'InProgress',
      ...(d.message ? { message: d.message } : {}),
      successCount: d.successCount ?? 0,
      failureCount: d.failureCount ?? 0,
      percentageProgress: d.percentageProgress ?? 0,
      ...(d.inputFileBucket ? { inputFileBucket: d.inputFileBucket } : {}),
      ...(d.inputFileKey ? { inputFileKey: d.inputFileKey } : {}),
      ...(d.creationDate ? { creationDate: d.creationDate } : {}),
    };
  } catch (e) {
    if (isNotFoundAwsError(e)) return undefined;
    throw awsFailure('AWS_REQUEST_FAILED', `DescribeThingRegistrationTask ${taskId}`, e);
  }
}

async function listTasks(
  c: CloudClients,
  nextToken: string | undefined,
  status?: 'InProgress',
): Promise<{ taskIds: string[]; nextToken?: string }> {
  const out = await withRetries(
    () => c.iot.send(new ListThingRegistrationTasksCommand({ nextToken, maxResults: 250, status })),
    { retry: 'transient', what: 'ListThingRegistrationTasks' },
  ).catch((e: unknown) => {
    throw awsFailure('AWS_REQUEST_FAILED', 'ListThingRegistrationTasks', e);
  });
  return { taskIds: out.taskIds ?? [], ...(out.nextToken ? { nextToken: out.nextToken } : {}) };
}

export interface StartTaskRequest {
  bucket: string;
  key: string;
  templateBody: string;
  roleArn: string;
  /** Attempts after throttling or ambiguous failures; default 6. */
  maxAttempts?: number;
  signal?: AbortSignal;
}

export type StartTaskResult =
  { status: 'started'; taskId: string } | { status: 'busy'; message: string; runningTaskId?: string };

/** AWS's answer when another task runs (InvalidRequestException, aws-iot.md §1.5). */
function isBusy(e: unknown): boolean {
  return awsErrorName(e) === 'InvalidRequestException' && /already in progress|one task/i.test(awsMessage(e));
}

const LOOKBACK_MS = 5 * 60_000;

export async function startTask(c: CloudClients, r: StartTaskRequest): Promise<StartTaskResult> {
  const maxAttempts = r.maxAttempts ?? 6;
  const since = new Date(Date.now() - LOOKBACK_MS);
  for (let attempt = 0; ; attempt++) {
    try {
      const out = await c.iot.send(
        new StartThingRegistrationTaskCommand({
          inputFileBucket: r.bucket,
          inputFileKey: r.key,
          templateBody: r.templateBody,
          roleArn: r.roleArn,
        }),
        { abortSignal: r.signal },
      );
      if (!out.taskId) throw new Error('StartThingRegistrationTask returned no taskId');
      return { status: 'started', taskId: out.taskId };
    } catch (e) {
      if (isBusy(e)) {
        const running = await runningTask(c, r.signal);
        if (running?.inputFileBucket === r.bucket && running.inputFileKey === r.key)
          return { status: 'started', taskId: running.taskId };
        return {
          status: 'busy',
          message: awsMessage(e),
          ...(running ? { runningTaskId: running.taskId } : {}),
        };
      }
      const name = awsErrorName(e);
      if (attempt + 1 >= maxAttempts || !isRetryableAwsError(name))
        throw awsFailure('REGISTRATION_TASK_REJECTED', 'StartThingRegistrationTask', e, {
          details: { bucket: r.bucket, key: r.key },
        });
      // Throttled: nothing happened. Otherwise the task may exist: look before starting again.
      if (!isThrottlingAwsError(name)) {
        const taskId = await findTaskByInputKey(c, { bucket: r.bucket, key: r.key, since, signal: r.signal });
        if (taskId) return { status: 'started', taskId };
      }
      await sleepFor(backoff(attempt), r.signal, 'StartThingRegistrationTask');
    }
  }
}

async function runningTask(c: CloudClients, signal?: AbortSignal): Promise<TaskDescription | undefined> {
  const { taskIds } = await listTasks(c, undefined, 'InProgress');
  return taskIds[0] === undefined ? undefined : describeTask(c, taskIds[0], signal);
}

export interface FindTaskRequest {
  bucket: string;
  key: string;
  /** Tasks created before this are not looked at (leave minutes for clock skew). */
  since: Date;
  signal?: AbortSignal;
}

/** The newest task created since `since` that reads s3://bucket/key. */
export async function findTaskByInputKey(c: CloudClients, r: FindTaskRequest): Promise<string | undefined> {
  let nextToken: string | undefined;
  do {
    const page = await listTasks(c, nextToken);
    for (const taskId of page.taskIds) {
      const d = await describeTask(c, taskId, r.signal);
      if (!d) continue; // deleted between list and describe
      if (d.creationDate && d.creationDate < r.since) return undefined;
      if (d.inputFileBucket === r.bucket && d.inputFileKey === r.key) return taskId;
    }
    nextToken = page.nextToken;
  } while (nextToken);
  return undefined;
}

export type TerminalStatus = 'Completed' | 'Failed' | 'Cancelled';
const TERMINAL: readonly string[] = ['Completed', 'Failed', 'Cancelled'];

export interface WaitOptions {
  signal?: AbortSignal;
  onProgress?(desc: TaskDescription): void;
  minDelayMs?: number;
  maxDelayMs?: number;
}

export interface TaskOutcome {
  status: TerminalStatus;
  /** AWS's message for Failed tasks. */
  message?: string;
  successCount: number;
  failureCount: number;
}

/** Polls the task, more slowly as time goes by, until it is Completed, Failed or Cancelled. */
export async function waitTask(c: CloudClients, taskId: string, o: WaitOptions = {}): Promise<TaskOutcome> {
  const maxDelayMs = o.maxDelayMs ?? 2000;
  let delayMs = Math.min(o.minDelayMs ?? 100, maxDelayMs);
  for (;;) {
    const d = await describeTask(c, taskId, o.signal);
    if (!d)
      throw new ProvlineError(
        'REGISTRATION_TASK_NOT_FOUND',
        `Thing registration task ${taskId} does not exist`,
        {
          details: { taskId },
          hint: 'AWS deletes task data 30 days after the task ends. Check the task id recorded for the chunk.',
        },
      );
    o.onProgress?.(d);
    if (TERMINAL.includes(d.status))
      return {
        status: d.status as TerminalStatus,
        ...(d.message ? { message: d.message } : {}),
        successCount: d.successCount,
        failureCount: d.failureCount,
      };
    await sleepFor(delayMs, o.signal, `waiting for task ${taskId}`);
    delayMs = Math.min(maxDelayMs, Math.ceil(delayMs * 1.5));
  }
}

// ---------------------------------------------------------------------------------------------
// Reports

export type BulkResult = IssuedCertificate;

export interface BulkLineError {
  errorName: string;
  message: string;
  retryable: boolean;
  statusCode?: number;
}

export interface BulkReports {
  /** By input line number (1-based). */
  results: Map<number, BulkResult>;
  errors: Map<number, BulkLineError>;
}

/** A key of `o` in any casing (`certificatePem`, `CertificatePem`). */
function pick(o: unknown, key: string): unknown {
  if (typeof o !== 'object' || o === null) return undefined;
  const rec = o as Record<string, unknown>;
  if (key in rec) return rec[key];
  const lower = key.toLowerCase();
  const k = Object.keys(rec).find((x) => x.toLowerCase() === lower);
  return k === undefined ? undefined : rec[k];
}

function unreadable(what: string, details: Record<string, unknown>, cause?: unknown): ProvlineError {
  return new ProvlineError('REGISTRATION_REPORT_UNREADABLE', what, { details, cause });
}

/**
 * Adds the lines of one report part to `into` (pure). Unknown keys are ignored. A line
 * without a usable `lineNumber` cannot be mapped to its device: REGISTRATION_REPORT_UNREADABLE.
 * A RESULTS line without a certificate becomes an error entry (`MalformedResult`).
 */
export function parseReport(type: 'RESULTS' | 'ERRORS', text: string, into: BulkReports, part = ''): void {
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line) return;
    const where = { report: type, part, reportLine: i + 1 };
    let o: unknown;
    try {
      o = JSON.parse(line);
    } catch (e) {
      throw unreadable(`${type} report line ${i + 1} is not JSON`, where, e);
    }
    const n = Number(pick(o, 'lineNumber'));
    if (!Number.isInteger(n) || n < 1)
      throw unreadable(`${type} report line ${i + 1} has no valid lineNumber`, where);
    const response = pick(o, 'response');
    const errorMessage = pick(o, 'errorMessage');
    const issued =
      type === 'RESULTS'
        ? issuedCertificate(
            pick(response, 'certificatePem') as string | undefined,
            pick(response, 'resourceArns') as Record<string, unknown> | undefined,
          )
        : undefined;
    if (issued) {
      into.results.set(n, issued);
      return;
    }
    if (type === 'RESULTS' && typeof errorMessage !== 'string') {
      into.errors.set(n, {
        errorName: 'MalformedResult',
        message: 'The RESULTS line holds no certificate',
        retryable: false,
      });
      return;
    }
    const pe = parseReportError(typeof errorMessage === 'string' ? errorMessage : '');
    into.errors.set(n, {
      errorName: pe.errorName,
      message: pe.message,
      retryable: isRetryableAwsError(pe.errorName),
      ...(pe.statusCode === undefined ? {} : { statusCode: pe.statusCode }),
    });
  });
}

export interface ReadReportsOptions {
  signal?: AbortSignal;
}

/**
 * Both reports of a finished task, keyed by input line number. A line in both reports counts
 * as a result (a certificate exists for it).
 */
export async function readReports(
  c: CloudClients,
  taskId: string,
  o: ReadReportsOptions = {},
): Promise<BulkReports> {
  const into: BulkReports = { results: new Map(), errors: new Map() };
  for (const type of ['RESULTS', 'ERRORS'] as const) {
    for (const link of await reportLinks(c, taskId, type, o.signal)) {
      const url = new URL(link);
      const part = url.pathname.split('/').pop() ?? '';
      parseReport(type, await fetchReport(url, taskId, o.signal), into, part);
    }
  }
  for (const n of into.results.keys()) into.errors.delete(n);
  return into;
}

async function reportLinks(
  c: CloudClients,
  taskId: string,
  reportType: ReportType,
  signal?: AbortSignal,
): Promise<string[]> {
  const links: string[] = [];
  let nextToken: string | undefined;
  do {
    const out = await withRetries(
      () =>
        c.iot.send(
          new ListThingRegistrationTaskReportsCommand({ taskId, reportType, nextToken, maxResults: 250 }),
          {
            abortSignal: signal,
          },
        ),
      { retry: 'transient', what: 'ListThingRegistrationTaskReports', signal },
    ).catch((e: unknown) => {
      throw awsFailure('AWS_REQUEST_FAILED', `ListThingRegistrationTaskReports ${taskId} ${reportType}`, e);
    });
    links.push(...(out.resourceLinks ?? []));
    nextToken = out.nextToken;
  } while (nextToken);
  return links;
}

/** GETs a presigned report link. The link's query (a signature) is never put in errors. */
async function fetchReport(url: URL, taskId: string, signal?: AbortSignal): Promise<string> {
  const shown = `${url.origin}${url.pathname}`;
  try {
    return await withRetries(
      async () => {
        const res = await fetch(url, signal ? { signal } : {});
        if (res.ok) return await res.text();
        await res.body?.cancel();
        const transient = res.status === 429 || res.status >= 500;
        throw Object.assign(new Error(`HTTP ${res.status}`), {
          name: transient ? 'ServiceUnavailable' : 'ReportDownloadFailed',
        });
      },
      { retry: 'transient', what: 'reading a registration report', signal },
    );
  } catch (e) {
    if (e instanceof ProvlineError) throw e;
    const name = awsErrorName(e);
    throw new ProvlineError(
      'REGISTRATION_REPORT_UNREADABLE',
      `Reading report ${shown} of task ${taskId} failed: ${awsMessage(e)}`,
      { retryable: isRetryableAwsError(name), details: { taskId, report: shown, errorName: name }, cause: e },
    );
  }
}
