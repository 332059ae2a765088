/**
 * The per-serial batch report: one row per serial of the plan (and per rejected CSV line), in
 * plan order, as CSV or JSON. Pure: rows in, text out.
 */
export const REPORT_COLUMNS = [
  'serial',
  'line',
  'thingName',
  'state',
  'certificateId',
  'acceptedAt',
  'keyedAt',
  'registeredAt',
  'signedAt',
  'flashedAt',
  'verifiedAt',
  'connectedAt',
  'failedAt',
  'errorCode',
  'errorStage',
  'errorMessage',
  'batch',
] as const;

/** Claim lots (strategy claim) add what the hook decided: provisioned, denied (why), not seen. */
export const CLAIM_COLUMNS = ['claim', 'claimReason'] as const;

export type ReportRow = Record<(typeof REPORT_COLUMNS)[number], string> &
  Partial<Record<(typeof CLAIM_COLUMNS)[number], string>>;

/** RFC 4180 quoting, and a leading ' for values a spreadsheet would run as a formula. */
function csvField(v: string): string {
  const safe = /^[=+\-@\t\r]/.test(v) ? `'${v}` : v;
  return /[",\r\n]/.test(safe) ? `"${safe.replaceAll('"', '""')}"` : safe;
}

export function reportCsvHeader(claim = false): string {
  return `${[...REPORT_COLUMNS, ...(claim ? CLAIM_COLUMNS : [])].join(',')}\n`;
}

export function reportCsvRow(r: ReportRow, claim = false): string {
  return `${[...REPORT_COLUMNS, ...(claim ? CLAIM_COLUMNS : [])].map((c) => csvField(r[c] ?? '')).join(',')}\n`;
}
