/**
 * What a station reports, as plain data: the live view, `--json` lines and the benchmark all
 * read these events. Nothing here does I/O.
 */
import type { CredentialObject } from '../drivers/index.js';

/** What a port is doing right now (the view's "step" column). */
export type StationStep =
  | 'opening'
  | 'waiting'
  | 'identify'
  | 'lookup'
  | 'keygen'
  | 'register'
  | 'unwrap'
  | 'verify'
  | 'write'
  | 'prove'
  | 'connect'
  | 'record'
  | 'remove'
  | 'stopped';

/**
 * How one device visit ended:
 * - verified: credentials written, read back and (where the driver can) possession proven;
 *   with a first connect (`connected` on the result), the device also connected as its thing;
 * - already: the device already held exactly these credentials (nothing written), confirmed;
 * - failed: the device or the link failed (the code says why); recorded unless unrecorded;
 * - refused: unknown, unregistered or not for this station; the device was left untouched;
 * - abandoned: the station stopped during the visit; nothing recorded as done.
 */
export type Outcome = 'verified' | 'already' | 'failed' | 'refused' | 'abandoned';

/** Where the result went: the journal, the cache's local results log, or nowhere. */
export type RecordedIn = 'journal' | 'local' | 'none';

export interface DeviceResult {
  port: string;
  serial: string;
  batchId?: string;
  outcome: Outcome;
  code?: string;
  /** The operator message, e.g. "Station line-3 /dev/ttyUSB0: device SN1 verified". */
  message: string;
  hint?: string;
  /** Identity read to result. */
  ms: number;
  flashMs?: number;
  verifyMs?: number;
  /** Bytes the driver wrote for the credentials (retries included). */
  bytes?: number;
  /** The device's first MQTT connect got CONNACK 0 as its thing (recorded `connected`). */
  connected?: true;
  /** The first connect: its time and the attempts the device needed. */
  connectMs?: number;
  connectAttempts?: number;
  recorded: RecordedIn;
  /** The result should have been recorded but could not be (journal unreachable, no cache). */
  unrecorded?: boolean;
}

export type StationEvent =
  | {
      event: 'station';
      stationId: string;
      profile: string;
      driver: string;
      ports: string[];
      journal: JournalStatus;
    }
  | {
      event: 'port';
      port: string;
      status: 'waiting-for-port' | 'open' | 'closed' | 'error';
      message?: string;
    }
  | { event: 'device'; port: string; serial: string; model?: string; firmware?: string }
  | { event: 'step'; port: string; serial: string; step: StationStep }
  | {
      event: 'progress';
      port: string;
      serial: string;
      object: CredentialObject;
      bytesSent: number;
      bytesTotal: number;
    }
  | ({ event: 'result' } & DeviceResult)
  | { event: 'left'; port: string; serial: string }
  | { event: 'journal'; status: JournalStatus; message?: string }
  | ({ event: 'summary' } & StationSummary);

/** online: Redis answers; offline: Redis is unreachable and the cache stands in; cache: no Redis at all. */
export type JournalStatus = 'online' | 'offline' | 'cache';

export interface StationSummary {
  verified: number;
  already: number;
  /** Of the verified and already: devices whose first connect succeeded. */
  connected: number;
  failed: number;
  refused: number;
  abandoned: number;
  /** Results that could be recorded neither in the journal nor locally. */
  unrecorded: number;
}

export function emptySummary(): StationSummary {
  return { verified: 0, already: 0, connected: 0, failed: 0, refused: 0, abandoned: 0, unrecorded: 0 };
}

/** Devices that ended verified (written or already), every result recorded somewhere. */
export function allVerified(s: StationSummary): boolean {
  return s.verified + s.already > 0 && s.failed + s.refused + s.abandoned === 0 && s.unrecorded === 0;
}
