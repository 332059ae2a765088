/**
 * The journal's model, as plain types: one record per serial, the transitions between its
 * states (states.ts), and the narrow view of the journal a flashing station needs. Pure: the
 * journal in Redis (src/jobs/journal.ts) implements it, the station (src/flash/station) reads
 * and records through it, and neither imports the other.
 */
import type { BatchPlan } from './plan.js';
import type { DeviceState } from './states.js';

export interface DeviceRecord {
  serial: string;
  batch: string;
  thingName: string;
  line: number;
  state: DeviceState;
  createdAt: number;
  updatedAt: number;
  /** Epoch ms of entering each state. */
  at: Partial<Record<DeviceState, number>>;
  error?: { code: string; message: string; stage: string };
  /** Stage results: csrPem, publicKey, wrappedKey, kekId, certificateId, taskId, … */
  fields: Record<string, string>;
}

export type TransitionOutcome =
  | { status: 'ok'; from: DeviceState }
  | { status: 'same' }
  | { status: 'conflict'; current: DeviceState }
  | { status: 'unmet'; current: DeviceState }
  | { status: 'missing' };

export interface TransitionRequest {
  batchId: string;
  serial: string;
  to: DeviceState;
  /** Narrow the allowed from-states further than the life-cycle table does. */
  from?: readonly DeviceState[];
  fields?: Record<string, string>;
  /**
   * An extra condition checked in the same atomic step: `{ absent: 'csrPem' }` (never store a
   * second CSR) or `{ field: 'regChunk', equals: '7' }` (only the chunk that owns the device).
   */
  when?: { absent: string } | { field: string; equals: string };
}

/** A batch as a station needs it: the plan (the profile as submitted) and its endpoint. */
/** A claim batch's claim as stations need it (strategy claim); no key in plaintext. */
export interface ClaimView {
  claimCertificateId: string;
  claimCertificatePem: string;
  /** base64 RFC 5649 blob of the claim key under `kekLabel`. */
  claimWrappedKey: string;
  kekLabel: string;
  templateName: string;
  serialParameter: string;
  /** The parameter the device sends its lot (batch id) in, when the hook checks lots. */
  lotParameter?: string;
  deviceKey: 'csr' | 'keys';
}

export interface BatchView {
  plan: BatchPlan;
  /** Strategy claim: the profile's current claim (absent when revoked or not made). */
  claim?: ClaimView;
  /** iot:Data-ATS host, once the registrar has prepared the account. */
  endpoint?: string;
  /** The CA devices trust for the endpoint (PEM), set with the endpoint. */
  rootCaPem?: string;
}

/**
 * What a station needs from the journal: look devices and batches up, and move devices through
 * the life cycle (flashed, verified, failed). Lookups and results are the station's own
 * mapping over these; the station never sees how the journal is stored.
 */
export interface DeviceJournal {
  /** The records of these serials, in order; undefined where there is none. */
  records(serials: readonly string[]): Promise<(DeviceRecord | undefined)[]>;
  /** A page of a batch's serials, in input order (for prefetching a whole batch). */
  serials(batchId: string, start: number, count: number): Promise<string[]>;
  /** Throws BATCH_NOT_FOUND for a batch that does not exist. */
  batch(batchId: string): Promise<BatchView>;
  /** Applies the transitions in order, each one atomic; one outcome per request. */
  transition(requests: readonly TransitionRequest[]): Promise<TransitionOutcome[]>;
  /** Keeps the log of one visit of the device (bounded per serial by the journal). */
  logVisit?(serial: string, log: VisitLog): Promise<void>;
}

/**
 * Registers the CSR of a device-generated key (the registrar's single mode, RegisterThing) and
 * returns the device's record afterwards. An optional ability: a station wired without it
 * cannot register device-key devices.
 */
export type RegisterCsr = (req: {
  batchId: string;
  serial: string;
  csrPem: string;
  signal?: AbortSignal;
}) => Promise<DeviceRecord>;

/**
 * One line of a device visit's exchange, as the station's log keeps it: what the station sent
 * (`>`), what the device answered (`<`), or a note (`!`), at `t` ms after the visit began.
 * The text is a description, never the bytes: payloads that carry key material (a private key,
 * a wrapped key) are reduced to their length, and every line is capped.
 */
export interface ExchangeLine {
  t: number;
  dir: '>' | '<' | '!';
  text: string;
}

/** The log of one device visit at a station (`provline device <serial> --log`). */
export interface VisitLog {
  v: 1;
  /** Epoch ms the visit began. */
  at: number;
  stationId: string;
  port: string;
  driver: string;
  batchId?: string;
  outcome: string;
  code?: string;
  message?: string;
  ms: number;
  /** The journal states this visit recorded, in order. */
  recorded: DeviceState[];
  lines: ExchangeLine[];
  /** Lines left out of the middle to keep the visit within VISIT_LINES_MAX. */
  omitted: number;
  /** Made while the journal was unreachable: kept in the station's cache, synced later. */
  offline?: true;
}

/** Visits kept per serial (the newest). */
export const VISITS_KEPT = 20;
/** Lines kept per visit: the first and the last halves of this many. */
export const VISIT_LINES_MAX = 160;
/** Characters kept per line. */
export const VISIT_LINE_CHARS = 200;

/** Caps a visit's lines: each line's text, and their number (the middle is left out). */
export function capLines(lines: readonly ExchangeLine[]): { lines: ExchangeLine[]; omitted: number } {
  const cut = (l: ExchangeLine): ExchangeLine =>
    l.text.length > VISIT_LINE_CHARS ? { ...l, text: `${l.text.slice(0, VISIT_LINE_CHARS - 1)}…` } : l;
  if (lines.length <= VISIT_LINES_MAX) return { lines: lines.map(cut), omitted: 0 };
  const half = VISIT_LINES_MAX / 2;
  return {
    lines: [...lines.slice(0, half), ...lines.slice(-half)].map(cut),
    omitted: lines.length - VISIT_LINES_MAX,
  };
}
