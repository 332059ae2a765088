/**
 * The rows of a batch report, read from the plan and the journal a page at a time: the plan's
 * devices in order, then the rejected CSV lines. `provline report` and the demo write them.
 */
import type { ReportRow } from '../batch/index.js';
import type { BatchStore } from './batches.js';
import type { DeviceRecord, Journal } from './journal.js';

const iso = (t: number | undefined): string => (t === undefined ? '' : new Date(t).toISOString());

function toRow(
  rec: DeviceRecord | undefined,
  serial: string,
  line: number,
  thingName: string,
  batchId: string,
): ReportRow {
  return {
    serial,
    line: String(line),
    thingName,
    state: rec ? (rec.batch === batchId ? rec.state : 'moved') : 'unknown',
    certificateId: rec?.fields.certificateId ?? '',
    acceptedAt: iso(rec?.at.accepted),
    keyedAt: iso(rec?.at.keyed),
    registeredAt: iso(rec?.at.registered),
    signedAt: iso(rec?.at.signed),
    flashedAt: iso(rec?.at.flashed),
    verifiedAt: iso(rec?.at.verified),
    connectedAt: iso(rec?.at.connected),
    failedAt: iso(rec?.state === 'failed' ? rec.at.failed : undefined),
    errorCode: rec?.error?.code ?? '',
    errorStage: rec?.error?.stage ?? '',
    errorMessage: rec?.error?.message ?? '',
    batch: rec?.batch ?? batchId,
  };
}

/** The plan's devices in order, then the rejected CSV lines (claim lots: what the hook decided). */
export async function* reportRows(
  p: { journal: Journal; batches: BatchStore },
  batchId: string,
  claim?: (serial: string) => { claim: string; reason: string },
): AsyncGenerator<ReportRow> {
  const plan = await p.batches.plan(batchId);
  for (let i = 0; i < plan.devices.length; i += 500) {
    const page = plan.devices.slice(i, i + 500);
    const recs = await p.journal.getMany(page.map((d) => d.serial));
    for (let j = 0; j < page.length; j++) {
      const d = page[j]!;
      const row = toRow(recs[j], d.serial, d.line, d.thingName, batchId);
      if (claim) {
        const o = claim(d.serial);
        row.claim = o.claim;
        row.claimReason = o.reason;
      }
      yield row;
    }
  }
  for (const r of plan.rejected)
    yield {
      // A row whose serial cannot be read is named by its line.
      ...toRow(undefined, r.serial ?? `(line ${r.line})`, r.line, '', batchId),
      state: 'rejected',
      errorCode: r.codes.join(' '),
      errorStage: 'intake',
      errorMessage: 'invalid CSV row (provline validate shows the details)',
    };
}
