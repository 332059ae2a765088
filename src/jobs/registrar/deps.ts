/** What the registrar's parts are given: stores, cloud clients, the bulk slot, a clock. */
import type { CloudClients, Pacer } from '../../cloud/index.js';
import type { Logger } from '../../core/index.js';
import type { BatchStore } from '../batches.js';
import type { Journal } from '../journal.js';
import type { BulkSlot } from '../slot.js';

export interface RegistrarSettings {
  flushMs: number;
  registrationRounds: number;
  rootCaFile: string;
}

export interface RegistrarDeps {
  journal: Journal;
  batches: BatchStore;
  cloud: CloudClients;
  slot: BulkSlot;
  pacer: Pacer;
  /** Who holds the bulk slot: host/pid, for operators reading Redis. */
  owner: string;
  settings: RegistrarSettings;
  log?: Logger;
  /** Called when the HSM stage of a batch seems stalled (re-enqueues its jobs). */
  kickHsm?: (batchId: string) => Promise<void>;
  /** The clock every part reads (ms since the epoch); tests pass their own. */
  now: () => number;
}

/** How far back to look for a task or certificate a crashed registrar may have made. */
export const LOOKBACK_MS = 10 * 60_000;
