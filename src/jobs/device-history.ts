/**
 * One device's whole history across batches, from the journal: its record now, the records it
 * left in earlier batches (kept when it moved to a new batch), each batch's profile and
 * strategy, where every state was reached, and the station's log of its last visits. Read only.
 */
import type { DeviceRecord, VisitLog } from '../batch/index.js';
import { STATES, type DeviceState } from '../batch/index.js';
import { strategyNameOf, type StrategyName } from '../config/index.js';
import type { BatchStore } from './batches.js';
import type { Journal } from './journal.js';

export interface StateEntry {
  state: DeviceState;
  /** Epoch ms. */
  at: number;
  /** The station and port that recorded it (station states only). */
  station?: string;
  port?: string;
}

export interface BatchHistory {
  batchId: string;
  /** The device's record now (false: a record it left in an earlier batch). */
  current: boolean;
  profile?: string;
  strategy?: StrategyName;
  line: number;
  thingName: string;
  state: DeviceState;
  states: StateEntry[];
  certificateId?: string;
  error?: { code: string; message: string; stage: string };
}

export interface DeviceHistory {
  serial: string;
  batches: BatchHistory[];
}

/** undefined for a serial the journal has never seen. */
export async function deviceHistory(
  journal: Journal,
  batches: BatchStore,
  serial: string,
): Promise<DeviceHistory | undefined> {
  const current = await journal.get(serial);
  if (!current) return undefined;
  const earlier = await journal.history(serial);
  const out: BatchHistory[] = [];
  for (const [i, rec] of [current, ...earlier].entries()) out.push(await entry(batches, rec, i === 0));
  return { serial, batches: out };
}

async function entry(batches: BatchStore, rec: DeviceRecord, current: boolean): Promise<BatchHistory> {
  let profile: string | undefined;
  let strategy: StrategyName | undefined;
  try {
    const plan = await batches.plan(rec.batch);
    profile = plan.profile.name;
    strategy = strategyNameOf(plan.profile);
  } catch {
    // A batch whose plan is gone (removed by hand) still shows what the record says.
  }
  const states = STATES.flatMap((state): StateEntry[] => {
    const at = rec.at[state];
    if (at === undefined) return [];
    const station = rec.fields[`station:${state}`];
    const port = rec.fields[`port:${state}`];
    return [{ state, at, ...(station ? { station } : {}), ...(port ? { port } : {}) }];
  }).sort((a, b) => a.at - b.at);
  return {
    batchId: rec.batch,
    current,
    ...(profile ? { profile } : {}),
    ...(strategy ? { strategy } : {}),
    line: rec.line,
    thingName: rec.thingName,
    state: rec.state,
    states,
    ...(rec.fields.certificateId ? { certificateId: rec.fields.certificateId } : {}),
    ...(rec.error ? { error: rec.error } : {}),
  };
}

/** The station's logs of the serial's last visits, newest first. */
export function deviceVisits(journal: Journal, serial: string): Promise<VisitLog[]> {
  return journal.visits(serial);
}
