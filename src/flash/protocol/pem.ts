/**
 * How both protocols write PEM text (docs/device-protocol.md §4, slots 0-2; nrfcloud-utils for
 * nRF91): trimmed, every line ending CRLF, no trailing line break. The hash a device reports
 * covers exactly this text, so the station hashes what it sends, not what the bundle holds.
 */
export function normalizePem(pem: string): string {
  return pem
    .trim()
    .split(/\r\n|\r|\n/)
    .join('\r\n');
}
