/**
 * The one place that turns an outcome into an exit code (documented in README and
 * docs/troubleshooting.md):
 *   0 ok · 1 failed · 2 usage · 3 invalid input · 4 partly failed
 */
import type { ErrorKind } from '../core/index.js';

export const EXIT = { ok: 0, failed: 1, usage: 2, invalidInput: 3, partial: 4 } as const;

export function exitCodeFor(kind: ErrorKind): number {
  switch (kind) {
    case 'usage':
      return EXIT.usage;
    case 'invalid-input':
      return EXIT.invalidInput;
    case 'partial':
      return EXIT.partial;
    case 'failed':
      return EXIT.failed;
  }
}

/** Thrown by a command that finished and wants a specific exit code without an error message. */
export class ExitCode extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}
