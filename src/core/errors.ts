/**
 * Typed errors with stable codes.
 *
 * Every error provline raises on purpose is a ProvlineError: a stable `code` (documented in
 * docs/troubleshooting.md), a `kind` that decides the process exit code in exactly one place
 * (src/cli/exit.ts), a `retryable` flag that workers use to stop retries early, an operator
 * message apart from the technical `cause`, and an optional hint saying what to do. Codes come
 * from one registry (src/core/codes.ts), so a code nobody documented does not compile.
 */
import type { ErrorCode } from './codes.js';

export type { ErrorCode } from './codes.js';

/** What kind of failure this is; the CLI maps kinds to exit codes. */
export type ErrorKind =
  /** The command line itself is wrong (unknown option, missing argument). */
  | 'usage'
  /** The user's input (CSV, config, profile, file) is invalid. */
  | 'invalid-input'
  /** The operation could not be carried out (a service down, a device refused, a bug). */
  | 'failed'
  /** The operation ran, but some items failed. */
  | 'partial';

export interface ErrorOptions {
  kind?: ErrorKind;
  retryable?: boolean;
  hint?: string;
  details?: Record<string, unknown>;
  cause?: unknown;
}

export class ProvlineError extends Error {
  readonly code: ErrorCode;
  readonly kind: ErrorKind;
  readonly retryable: boolean;
  readonly hint: string | undefined;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: ErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ProvlineError';
    this.code = code;
    this.kind = options.kind ?? 'failed';
    this.retryable = options.retryable ?? false;
    this.hint = options.hint;
    this.details = options.details ?? {};
  }

  /** A JSON-safe view for `--json` output and logs (no cause objects, no stack). */
  toJSON(): Record<string, unknown> {
    return {
      code: this.code,
      message: this.message,
      ...(this.hint === undefined ? {} : { hint: this.hint }),
      retryable: this.retryable,
      ...(Object.keys(this.details).length ? { details: this.details } : {}),
    };
  }
}

export function usageError(message: string, hint?: string): ProvlineError {
  return new ProvlineError('USAGE', message, { kind: 'usage', hint });
}

export function isProvlineError(e: unknown): e is ProvlineError {
  return e instanceof ProvlineError;
}

/** The message of anything thrown, for causes that are not ProvlineErrors. */
export function messageOf(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}
