/**
 * AWS Signature Version 4 verification (header and query-string/presigned forms), and
 * presigning for the report links. Pure: the caller passes the request parts and a secret
 * lookup; nothing here touches sockets.
 *
 * Canonical URI: S3 signs the path exactly as sent; every other service (here: `iot`) signs
 * the path URI-encoded once more (what the JS SDK v3 and botocore both do). Other services
 * normalise `.`/`..`/empty segments first, as the SDKs do.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

export interface SignedRequest {
  method: string;
  /** Raw path as received, still percent-encoded, without the query. */
  path: string;
  /** Raw query string without the leading '?'. */
  query: string;
  /** Lower-case header names (Node's `req.headers`). */
  headers: Record<string, string | string[] | undefined>;
  /** sha256 hex of the body, or the literal from x-amz-content-sha256. */
  payloadHash: string;
}

export interface Credentials {
  accessKeyId: string;
  secretAccessKey: string;
}

export type AuthFailure =
  | { kind: 'missing'; message: string }
  | { kind: 'unknown-key'; message: string }
  | { kind: 'bad-signature'; message: string }
  | { kind: 'malformed'; message: string }
  /** Signed for another region than the stand-in's (AWS refuses those before the signature). */
  | { kind: 'wrong-region'; message: string; region: string; expected: string };

export interface AuthOk {
  accessKeyId: string;
  region: string;
  service: string;
}

const ALGORITHM = 'AWS4-HMAC-SHA256';
const MAX_SKEW_MS = 15 * 60 * 1000;

export function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** RFC 3986 encoding as SigV4 wants it (everything but A-Za-z0-9-_.~). */
export function uriEncode(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

export function canonicalQuery(query: string, drop?: string): string {
  if (!query) return '';
  const pairs: Array<[string, string]> = [];
  for (const part of query.split('&')) {
    if (!part) continue;
    const eq = part.indexOf('=');
    const k = safeDecode(eq < 0 ? part : part.slice(0, eq));
    const v = eq < 0 ? '' : safeDecode(part.slice(eq + 1));
    if (k === drop) continue;
    pairs.push([uriEncode(k), uriEncode(v)]);
  }
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return pairs.map(([k, v]) => `${k}=${v}`).join('&');
}

function canonicalPath(path: string, service: string): string {
  if (service === 's3') return path || '/';
  const segments: string[] = [];
  for (const seg of path.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') segments.pop();
    else segments.push(seg);
  }
  const normal = `/${segments.join('/')}${segments.length > 0 && path.endsWith('/') ? '/' : ''}`;
  return uriEncode(normal).replace(/%2F/g, '/');
}

function headerValue(v: string | string[] | undefined): string {
  const s = Array.isArray(v) ? v.join(',') : (v ?? '');
  return s.trim().replace(/\s+/g, ' ');
}

function signingKey(secret: string, date: string, region: string, service: string): Buffer {
  const kDate = createHmac('sha256', `AWS4${secret}`).update(date).digest();
  const kRegion = createHmac('sha256', kDate).update(region).digest();
  const kService = createHmac('sha256', kRegion).update(service).digest();
  return createHmac('sha256', kService).update('aws4_request').digest();
}

function signature(
  req: SignedRequest,
  service: string,
  amzDate: string,
  scope: string,
  signedHeaders: string[],
  key: Buffer,
  dropQuery?: string,
): string {
  const canonical = [
    req.method.toUpperCase(),
    canonicalPath(req.path, service),
    canonicalQuery(req.query, dropQuery),
    ...signedHeaders.map((h) => `${h}:${headerValue(req.headers[h])}`),
    '',
    signedHeaders.join(';'),
    req.payloadHash,
  ].join('\n');
  const toSign = [ALGORITHM, amzDate, scope, sha256Hex(canonical)].join('\n');
  return createHmac('sha256', key).update(toSign).digest('hex');
}

function parseAmzDate(s: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m) return NaN;
  return Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!);
}

function equalHex(a: string, b: string): boolean {
  return a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

/**
 * Verifies a request signed for one of `services` against the known credentials. AWS IoT
 * accepts both `iot` (the JS SDK v3's signing name) and `execute-api` (the signingName in
 * botocore's model metadata, which AWS CLI v2.9 uses).
 * `now` is injectable for tests.
 */
export function verifySigV4(
  req: SignedRequest,
  services: string | readonly string[],
  lookup: (accessKeyId: string) => string | undefined,
  now = Date.now(),
  /** The stand-in's region: a credential scoped to another one is refused. */
  expectedRegion?: string,
): AuthOk | AuthFailure {
  const auth = headerValue(req.headers.authorization);
  const params = new URLSearchParams(req.query);
  let credential: string;
  let signedHeaders: string[];
  let given: string;
  let amzDate: string;
  let expiresSec: number | undefined;
  let dropQuery: string | undefined;
  if (auth) {
    if (!auth.startsWith(`${ALGORITHM} `))
      return { kind: 'malformed', message: `Unsupported authorization type; only ${ALGORITHM} is accepted.` };
    const fields = Object.fromEntries(
      auth
        .slice(ALGORITHM.length + 1)
        .split(',')
        .map((f) => f.trim().split('=') as [string, string]),
    );
    if (!fields.Credential || !fields.SignedHeaders || !fields.Signature)
      return {
        kind: 'malformed',
        message: 'Authorization header requires Credential, SignedHeaders and Signature.',
      };
    credential = fields.Credential;
    signedHeaders = fields.SignedHeaders.split(';');
    given = fields.Signature;
    amzDate = headerValue(req.headers['x-amz-date']);
  } else if (params.get('X-Amz-Algorithm')) {
    if (params.get('X-Amz-Algorithm') !== ALGORITHM)
      return { kind: 'malformed', message: `Only ${ALGORITHM} is supported.` };
    credential = params.get('X-Amz-Credential') ?? '';
    signedHeaders = (params.get('X-Amz-SignedHeaders') ?? '').split(';');
    given = params.get('X-Amz-Signature') ?? '';
    amzDate = params.get('X-Amz-Date') ?? '';
    expiresSec = Number(params.get('X-Amz-Expires') ?? '604800');
    dropQuery = 'X-Amz-Signature';
  } else {
    return { kind: 'missing', message: 'Missing Authentication Token' };
  }
  const parts = credential.split('/');
  if (parts.length !== 5 || parts[4] !== 'aws4_request')
    return {
      kind: 'malformed',
      message: `Credential should be of the form <key>/<date>/<region>/<service>/aws4_request, got '${credential}'.`,
    };
  const [accessKeyId, date, region, scopeService] = parts as [string, string, string, string];
  const allowed = typeof services === 'string' ? [services] : services;
  if (!allowed.includes(scopeService))
    return {
      kind: 'bad-signature',
      message: `Credential should be scoped to correct service: '${allowed[0]}'. `,
    };
  if (expectedRegion !== undefined && region !== expectedRegion)
    return {
      kind: 'wrong-region',
      message: `Credential should be scoped to a valid region, not '${region}'. The endpoint is in '${expectedRegion}'.`,
      region,
      expected: expectedRegion,
    };
  const secret = lookup(accessKeyId);
  if (secret === undefined)
    return { kind: 'unknown-key', message: 'The security token included in the request is invalid.' };
  const t = parseAmzDate(amzDate);
  if (Number.isNaN(t) || !amzDate.startsWith(date))
    return {
      kind: 'bad-signature',
      message: 'Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP.',
    };
  if (expiresSec !== undefined) {
    if (now > t + expiresSec * 1000) return { kind: 'bad-signature', message: 'Request has expired' };
  } else if (Math.abs(now - t) > MAX_SKEW_MS) {
    return {
      kind: 'bad-signature',
      message: `Signature expired: ${amzDate} is now earlier or later than the allowed skew of 15 minutes.`,
    };
  }
  const scope = `${date}/${region}/${scopeService}/aws4_request`;
  const key = signingKey(secret, date, region, scopeService);
  const expected = signature(req, scopeService, amzDate, scope, signedHeaders, key, dropQuery);
  if (equalHex(expected, given)) return { accessKeyId, region, service: scopeService };
  return {
    kind: 'bad-signature',
    message:
      'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.',
  };
}

/** A presigned GET URL (query-string SigV4, UNSIGNED-PAYLOAD), as S3's presigner makes. */
export function presignUrl(options: {
  baseUrl: string;
  path: string;
  credentials: Credentials;
  region: string;
  service: string;
  expiresSec: number;
  now?: Date;
}): string {
  const now = options.now ?? new Date();
  const amzDate = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '');
  const date = amzDate.slice(0, 8);
  const host = new URL(options.baseUrl).host;
  const scope = `${date}/${options.region}/${options.service}/aws4_request`;
  const query = [
    ['X-Amz-Algorithm', ALGORITHM],
    ['X-Amz-Content-Sha256', 'UNSIGNED-PAYLOAD'],
    ['X-Amz-Credential', `${options.credentials.accessKeyId}/${scope}`],
    ['X-Amz-Date', amzDate],
    ['X-Amz-Expires', String(options.expiresSec)],
    ['X-Amz-SignedHeaders', 'host'],
  ]
    .map(([k, v]) => `${uriEncode(k!)}=${uriEncode(v!)}`)
    .join('&');
  const key = signingKey(options.credentials.secretAccessKey, date, options.region, options.service);
  const sig = signature(
    { method: 'GET', path: options.path, query, headers: { host }, payloadHash: 'UNSIGNED-PAYLOAD' },
    options.service,
    amzDate,
    scope,
    ['host'],
    key,
  );
  return `${options.baseUrl}${options.path}?${query}&X-Amz-Signature=${sig}`;
}
