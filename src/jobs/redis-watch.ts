/**
 * Riding through a Redis outage quietly: every Redis client and BullMQ object of a process
 * reports its errors here, and the process logs one structured line per change of state
 * ("unreachable since …, retrying every …", "reachable again after …") instead of one line
 * (or a multi-line dump) per failed reconnect of every connection.
 *
 * Errors that are not about the connection are logged as one line each, message only: no
 * stack traces in the JSON log.
 */
import type { Logger } from '../core/index.js';

/** How often a lost connection is retried (the ioredis back-off is capped at this). */
export const REDIS_RETRY_MS = 1000;

/** The reconnect back-off for every client provline makes: 100 ms, 200 ms, … capped at 1 s. */
export function redisRetryStrategy(times: number): number {
  return Math.min(100 * times, REDIS_RETRY_MS);
}

const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

const CONNECTION_MESSAGES = [
  'Connection is closed',
  "Stream isn't writeable",
  'Reached the max retries per request limit',
  'connect ECONNREFUSED',
  'read ECONNRESET',
  'Socket closed unexpectedly',
];

/** True when an error only says that Redis cannot be reached right now. */
export function isConnectionError(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  const code = (e as NodeJS.ErrnoException).code;
  if (code && CONNECTION_CODES.has(code)) return true;
  if (e.name === 'MaxRetriesPerRequestError') return true;
  return CONNECTION_MESSAGES.some((m) => e.message.includes(m));
}

/** What the watch needs of an ioredis client or a BullMQ object: its events. */
export interface EventSource {
  on(event: 'error', listener: (err: Error) => void): unknown;
}

export interface ReadySource {
  on(event: 'ready', listener: () => void): unknown;
}

export interface RedisWatchOptions {
  log: Logger;
  /** Names the connection in the log lines (the Redis URL without credentials). */
  target: string;
  now?: () => number;
}

/**
 * After a connection comes back, connection errors of the process's other clients (commands
 * queued on a socket that died, clients not yet reconnected) go on arriving for a moment. They
 * do not make a new outage unless they continue past this window: every client retries at
 * least once a second, so a real new outage is still reported within it plus a retry.
 */
export const REDIS_SETTLE_MS = 3000;

export class RedisWatch {
  private downSince: number | undefined;
  private lastReadyAt: number | undefined;
  /** The first connection error of a run of them (each within two retries of the last). */
  private pendingSince: number | undefined;
  private lastErrorAt: number | undefined;
  private readonly now: () => number;
  /** Non-connection error messages already logged, so a repeating one is logged once a minute. */
  private readonly recent = new Map<string, number>();

  constructor(private readonly o: RedisWatchOptions) {
    this.now = o.now ?? Date.now;
  }

  /** Since when Redis has been unreachable (epoch ms), or undefined while it answers. */
  get unreachableSince(): number | undefined {
    return this.downSince;
  }

  /** Listens to a client's or a BullMQ object's errors (and, for clients, its reconnects). */
  watch(source: EventSource, name: string): void {
    source.on('error', (err) => this.error(err, name));
    if (isReadySource(source)) source.on('ready', () => this.reachable());
  }

  /** Reports an error seen anywhere; connection errors only change the state. */
  error(err: unknown, name: string): void {
    if (isConnectionError(err)) {
      this.unreachable(err);
      return;
    }
    const message = err instanceof Error ? err.message : String(err);
    const t = this.now();
    const last = this.recent.get(message);
    if (last !== undefined && t - last < 60_000) return;
    this.recent.set(message, t);
    if (this.recent.size > 100) this.recent.delete(this.recent.keys().next().value!);
    this.o.log.error({ event: 'redis-error', source: name, err: message }, `${name}: ${message}`);
  }

  /** Redis did not answer (a failed call, a refused connection). */
  unreachable(err?: unknown): void {
    if (this.downSince !== undefined) return;
    const t = this.now();
    if (this.pendingSince === undefined || t - (this.lastErrorAt ?? t) > 2 * REDIS_RETRY_MS)
      this.pendingSince = t;
    this.lastErrorAt = t;
    if (this.lastReadyAt !== undefined && t - this.lastReadyAt < REDIS_SETTLE_MS) return;
    this.downSince = this.pendingSince;
    const since = new Date(this.downSince).toISOString();
    const code = err instanceof Error ? ((err as NodeJS.ErrnoException).code ?? err.message) : undefined;
    this.o.log.warn(
      {
        event: 'redis-unreachable',
        target: this.o.target,
        since,
        retryEveryMs: REDIS_RETRY_MS,
        ...(code ? { reason: code } : {}),
      },
      `Redis at ${this.o.target} unreachable since ${since}, retrying every ${REDIS_RETRY_MS / 1000} s`,
    );
  }

  /** Redis answered again (a client is ready). */
  reachable(): void {
    this.lastReadyAt = this.now();
    this.pendingSince = undefined;
    if (this.downSince === undefined) return;
    const downMs = this.now() - this.downSince;
    this.downSince = undefined;
    this.o.log.warn(
      { event: 'redis-reachable', target: this.o.target, downMs },
      `Redis at ${this.o.target} reachable again after ${(downMs / 1000).toFixed(1)} s`,
    );
  }
}

function isReadySource(s: EventSource): s is EventSource & ReadySource {
  return typeof (s as { status?: unknown }).status === 'string';
}

/** A Redis URL fit for logs: no user name or password. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.toString().replace(/\/$/, '');
  } catch {
    return 'redis';
  }
}
