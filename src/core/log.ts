/**
 * Structured logs (pino) on stderr, so stdout stays for command output. Secrets are redacted
 * by key name as a second line of defence; the first is never putting them in log calls.
 */
import { pino, type Logger } from 'pino';

export const REDACT_KEYS = [
  'pin',
  'userPin',
  'soPin',
  'password',
  'privateKey',
  'secretAccessKey',
  'kekValue',
];

export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid, ...bindings },
      redact: { paths: [...REDACT_KEYS, ...REDACT_KEYS.map((k) => `*.${k}`)], censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    pino.destination({ fd: 2, sync: true }),
  );
}

export type { Logger };
