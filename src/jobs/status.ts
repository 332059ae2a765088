/**
 * A batch's progress as numbers: devices per state, per stage, rate, ETA and failures by
 * code. `status` prints one snapshot; `submit --wait` samples it over time (RateMeter).
 */
import { FACTORY_CA_STRATEGIES } from '../config/index.js';
import type { DeviceState } from '../batch/index.js';
import type { BatchMeta, BatchStore } from './batches.js';
import type { Journal } from './journal.js';

export interface BatchStatus {
  batchId: string;
  profile: string;
  createdAt: string;
  total: number;
  rejected: number;
  counts: Record<DeviceState, number>;
  /**
   * Devices past each stage (`verified` counts the connected ones too). `registered` counts
   * devices with a certificate the station can write: registered with AWS, or signed offline by
   * the factory CA (jitp, jitr), which AWS registers at the first connect.
   */
  stages: { keyed: number; registered: number; verified: number; connected: number };
  /** What `registered` means for this lot: `registered` with AWS, or `signed` by the factory CA. */
  certificates: 'registered' | 'signed';
  /** Devices not yet registered and not failed (the registration stage's backlog). */
  pending: number;
  failed: number;
  failures: Record<string, number>;
  /** True when no device is left in accepted, keyed or registering (or the batch aborted). */
  registrationDone: boolean;
  aborted?: { code: string; message: string };
  /** Registered devices per second since the batch was created (or over the whole run). */
  rate: number;
  /** Seconds until registration is done at that rate; null when unknown, done or stalled. */
  etaSeconds: number | null;
  /**
   * Set when nothing has moved for STALL_MS: no device changed state and no registrar said it
   * was alive (every worker gone, or Redis was unreachable). Rate and ETA mean nothing then.
   */
  stalled?: { seconds: number; lastActivity: string };
  elapsedSeconds: number;
}

/** No device moved and no registrar beat for this long: the batch is stalled. */
export const STALL_MS = 30_000;

export async function batchStatus(
  journal: Journal,
  batches: BatchStore,
  batchId: string,
  now: number = Date.now(),
): Promise<BatchStatus> {
  const meta = await batches.meta(batchId);
  const counts = await journal.counts(batchId);
  const failures = await journal.failuresByCode(batchId);
  const progressAt = await journal.progressAt(batchId);
  return summarise(meta, counts, failures, now, progressAt);
}

export function summarise(
  meta: BatchMeta,
  counts: Record<DeviceState, number>,
  failures: Record<string, number>,
  now: number,
  /** When a device of the batch last changed state. */
  progressAt?: number,
): BatchStatus {
  const registered = counts.registered + counts.signed + counts.flashed + counts.verified + counts.connected;
  const pending = counts.accepted + counts.keyed + counts.registering;
  const done = pending === 0 || meta.abortedCode !== undefined;
  const end = done && meta.registeredAt !== undefined ? meta.registeredAt : now;
  const elapsed = Math.max(0.001, (end - meta.createdAt) / 1000);
  const rate = registered / elapsed;
  const lastActivity = Math.max(meta.createdAt, progressAt ?? 0, meta.registrarAt ?? 0);
  const stalled = !done && now - lastActivity > STALL_MS;
  return {
    batchId: meta.id,
    profile: meta.profile,
    createdAt: new Date(meta.createdAt).toISOString(),
    total: meta.total,
    rejected: meta.rejected,
    counts,
    certificates: FACTORY_CA_STRATEGIES.includes(meta.strategy) ? 'signed' : 'registered',
    stages: {
      keyed: counts.keyed + counts.registering + registered,
      registered,
      verified: counts.verified + counts.connected,
      connected: counts.connected,
    },
    pending,
    failed: counts.failed,
    failures,
    registrationDone: done,
    ...(meta.abortedCode ? { aborted: { code: meta.abortedCode, message: meta.abortedMessage ?? '' } } : {}),
    rate: Math.round(rate * 10) / 10,
    etaSeconds: done || stalled || rate <= 0 ? null : Math.ceil(pending / rate),
    ...(stalled
      ? {
          stalled: {
            seconds: Math.round((now - lastActivity) / 1000),
            lastActivity: new Date(lastActivity).toISOString(),
          },
        }
      : {}),
    elapsedSeconds: Math.round(elapsed * 10) / 10,
  };
}

/** Rate over a sliding window of samples (for live progress). */
export class RateMeter {
  private samples: Array<{ t: number; n: number }> = [];

  constructor(private readonly windowMs = 5000) {}

  add(t: number, n: number): number {
    this.samples.push({ t, n });
    while (this.samples.length > 2 && t - this.samples[0]!.t > this.windowMs) this.samples.shift();
    const first = this.samples[0]!;
    const dt = (t - first.t) / 1000;
    return dt > 0 ? (n - first.n) / dt : 0;
  }
}
