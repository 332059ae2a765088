/**
 * `provline station sync`: replays the results a station recorded in its cache while the
 * journal was unreachable. The mapping is the station's own (results.ts), so replaying is
 * idempotent: a cursor file remembers how far it got, and a result replayed twice (a crash
 * between the journal write and the cursor write) changes nothing. The exchange logs of the
 * visits made offline follow the results, with their own cursor; the journal keeps a log once
 * however often it is replayed.
 */
import type { DeviceJournal } from '../../batch/index.js';
import type { StationCache } from './cache.js';
import { describeOutcome, interpret, transitionFor, type ResultEntry } from './results.js';

export interface SyncRejection {
  serial: string;
  batchId: string;
  to: ResultEntry['to'];
  /** What the journal said, in words. */
  reason: string;
}

export interface SyncSummary {
  /** Results now reflected in the journal (moved, or already there). */
  applied: number;
  /** Results the journal had already gone past (the device is verified). */
  superseded: number;
  rejected: SyncRejection[];
  /** Lines of the results log that do not parse (skipped). */
  damaged: { offset: number; message: string }[];
  /** Byte range of the results log replayed by this run. */
  from: number;
  to: number;
  /** Visit logs of offline visits now in the journal (`provline device <serial> --log`). */
  visits: number;
  /** Lines of the visits log that do not parse (skipped). */
  damagedVisits: { offset: number; message: string }[];
}

export async function syncResults(req: {
  cache: StationCache;
  journal: Pick<DeviceJournal, 'transition' | 'logVisit'>;
  chunk?: number;
}): Promise<SyncSummary> {
  const from = await req.cache.readCursor();
  const read = await req.cache.readResults(from);
  const summary: SyncSummary = {
    applied: 0,
    superseded: 0,
    rejected: [],
    damaged: read.bad,
    from,
    to: from,
    visits: 0,
    damagedVisits: [],
  };
  const chunk = req.chunk ?? 100;
  for (let i = 0; i < read.lines.length; i += chunk) {
    const lines = read.lines.slice(i, i + chunk);
    const outcomes = await req.journal.transition(lines.map((l) => transitionFor(l.entry)));
    outcomes.forEach((outcome, j) => {
      const entry = lines[j]!.entry;
      const applied = interpret(outcome);
      if (applied === 'applied') summary.applied++;
      else if (applied === 'superseded') summary.superseded++;
      else
        summary.rejected.push({
          serial: entry.serial,
          batchId: entry.batchId,
          to: entry.to,
          reason: describeOutcome(outcome),
        });
    });
    summary.to = lines.at(-1)!.end;
    await req.cache.writeCursor(summary.to);
  }
  if (read.end > summary.to) {
    summary.to = read.end;
    await req.cache.writeCursor(read.end);
  }
  const logVisit = req.journal.logVisit?.bind(req.journal);
  if (logVisit) {
    const visits = await req.cache.readVisits(await req.cache.readCursor('visits'));
    summary.damagedVisits = visits.bad;
    for (let i = 0; i < visits.lines.length; i += chunk) {
      const lines = visits.lines.slice(i, i + chunk);
      await Promise.all(lines.map((l) => logVisit(l.serial, l.log)));
      summary.visits += lines.length;
      await req.cache.writeCursor(lines.at(-1)!.end, 'visits');
    }
    if (visits.end > (visits.lines.at(-1)?.end ?? 0)) await req.cache.writeCursor(visits.end, 'visits');
  }
  return summary;
}
