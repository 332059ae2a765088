/**
 * Ground truth for the device tests, written from docs/device-protocol.md rather than taken
 * from the driver, so a test that checks what a simulated device holds does not repeat the
 * driver's own mistakes.
 */
import { createHash } from 'node:crypto';

export { Slot } from '../../devices/serial-v1-wire.js';

/** §4 (slots 0-2) and §7: a PEM is written trimmed, every line ending CRLF, no trailing break. */
export function pemAsWritten(pem: string): string {
  return pem.trim().replace(/\r\n|\r|\n/g, '\r\n');
}

/** The upper-case hex SHA-256 a device reports for the text it holds. */
export function reportedHash(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex').toUpperCase();
}
