/** Reading request members by their wire location, and paging lists the way IoT does. */
import { invalid } from '../errors.js';
import { RULES, checkOne } from '../validate.js';

type Body = Record<string, unknown>;

export function str(body: Body, name: string): string | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw invalid(`Value at '${name}' must be a string`);
  return v;
}

export function requiredStr(body: Body, name: string): string {
  const v = str(body, name);
  if (v === undefined)
    throw invalid(
      `1 validation error detected: Value null at '${name}' failed to satisfy constraint: Member must not be null`,
    );
  return v;
}

export function bool(body: Body, name: string): boolean | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw invalid(`Value at '${name}' must be a boolean`);
  return v;
}

export function obj(body: Body, name: string): Body | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) throw invalid(`Value at '${name}' must be an object`);
  return v as Body;
}

export function stringMap(v: unknown, name: string): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw invalid(`Value at '${name}' must be a map of strings`);
  for (const [k, x] of Object.entries(v))
    if (typeof x !== 'string') throw invalid(`Value at '${name}.${k}' must be a string`);
  return v as Record<string, string>;
}

/** Query booleans are `true`/`false` strings. */
export function qbool(q: URLSearchParams, name: string): boolean | undefined {
  const v = q.get(name);
  if (v === null) return undefined;
  if (v !== 'true' && v !== 'false') throw invalid(`Value '${v}' at '${name}' is not a boolean`);
  return v === 'true';
}

export function qint(q: URLSearchParams, name: string, min: number, max: number): number | undefined {
  const v = q.get(name);
  if (v === null) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < min || n > max) {
    throw invalid(
      `1 validation error detected: Value '${v}' at '${name}' failed to satisfy constraint: Member must have value ${n < min ? `greater than or equal to ${min}` : `less than or equal to ${max}`}`,
    );
  }
  return n;
}

export interface Page<T> {
  items: T[];
  next: string | undefined;
}

/**
 * Pages a list that the caller sorted stably. Tokens are opaque to clients (base64 of the
 * position); a token that does not decode is an InvalidRequestException.
 */
export function paginate<T>(all: T[], token: string | null, size: number): Page<T> {
  let start = 0;
  if (token) {
    const decoded = Buffer.from(token, 'base64url').toString('utf8');
    start = Number(decoded.replace(/^p:/, ''));
    if (!decoded.startsWith('p:') || !Number.isInteger(start) || start < 0)
      throw invalid('The pagination token is not valid.');
  }
  const items = all.slice(start, start + size);
  const end = start + items.length;
  return { items, next: end < all.length ? Buffer.from(`p:${end}`).toString('base64url') : undefined };
}

/** nextToken/maxResults style (things, tasks, templates). */
export function tokenPage<T>(q: URLSearchParams, all: T[], defaultSize = 50): Page<T> {
  const size = qint(q, 'maxResults', RULES.maxResults.min, RULES.maxResults.max) ?? defaultSize;
  return paginate(all, q.get('nextToken'), size);
}

/** marker/pageSize style (policies, certificates). */
export function markerPage<T>(q: URLSearchParams, all: T[], defaultSize = 50): Page<T> {
  const size = qint(q, 'pageSize', 1, 250) ?? defaultSize;
  if (q.get('isAscendingOrder') === 'false') all = [...all].reverse();
  return paginate(all, q.get('marker'), size);
}

export function checkCertificateId(id: string, field = 'certificateId'): string {
  checkOne(field, id, RULES.certificateId);
  return id.replace(/^0x/, '').toLowerCase();
}
