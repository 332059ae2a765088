/**
 * The reasons log (what AWS never tells a device: why a connect, subscribe or publish was
 * refused, what each just-in-time step did) and the payloads of the broker's own messages
 * (lifecycle events, the JITR registered event).
 *
 * The log is a bounded in-memory ring (read by `GET /_emulator/events?since=<seq>`) plus an
 * NDJSON file in the state directory (`events.ndjson`, rotated to `events.ndjson.1` at 16 MiB).
 * Each entry carries a sequence number, increasing for the life of the process; readers pass
 * the last one they saw as `since`.
 */
import { closeSync, existsSync, openSync, renameSync, statSync, writeSync } from 'node:fs';
import type { DataPlaneEvent, RecordEvent } from './contract.js';

export interface LoggedEvent extends DataPlaneEvent {
  seq: number;
}

export interface EventLogOptions {
  /** NDJSON file to append to; none keeps the log in memory only. */
  file?: string;
  /** Entries kept in memory (default 5000). */
  capacity?: number;
  /** Epoch milliseconds (the injectable clock). */
  nowMs: () => number;
  rotateBytes?: number;
}

export interface EventQuery {
  since?: number;
  clientId?: string;
  limit?: number;
}

export class EventLog {
  private readonly ring: LoggedEvent[] = [];
  private readonly capacity: number;
  private readonly rotateBytes: number;
  private fd: number | undefined;
  private bytes = 0;
  private seq = 0;

  constructor(private readonly options: EventLogOptions) {
    this.capacity = options.capacity ?? 5000;
    this.rotateBytes = options.rotateBytes ?? 16 * 1024 * 1024;
    if (options.file) this.open(options.file);
  }

  private open(file: string): void {
    this.fd = openSync(file, 'a', 0o600);
    this.bytes = existsSync(file) ? statSync(file).size : 0;
  }

  /** Records one event (bound: pass `log.record` around as a RecordEvent). */
  readonly record: RecordEvent = (event) => {
    const entry: LoggedEvent = { seq: ++this.seq, time: this.options.nowMs(), ...event };
    this.ring.push(entry);
    if (this.ring.length > this.capacity) this.ring.splice(0, this.ring.length - this.capacity);
    if (this.fd !== undefined && this.options.file) {
      const line = `${JSON.stringify(entry)}\n`;
      try {
        writeSync(this.fd, line);
        this.bytes += Buffer.byteLength(line);
        if (this.bytes > this.rotateBytes) {
          closeSync(this.fd);
          renameSync(this.options.file, `${this.options.file}.1`);
          this.open(this.options.file);
        }
      } catch {
        // The file is a convenience; the in-memory ring stays authoritative.
      }
    }
  };

  /** Entries after `since` (oldest first), optionally for one client id. */
  query(q: EventQuery = {}): { events: LoggedEvent[]; next: number } {
    const since = q.since ?? 0;
    const limit = q.limit ?? 1000;
    const events: LoggedEvent[] = [];
    for (const e of this.ring) {
      if (e.seq <= since) continue;
      if (q.clientId !== undefined && e.clientId !== q.clientId) continue;
      events.push(e);
      if (events.length >= limit) break;
    }
    const last = events.length ? events[events.length - 1]!.seq : Math.max(since, 0);
    return { events, next: events.length >= limit ? last : Math.max(last, this.seq) };
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

/** `$aws/events/presence/connected|disconnected/<clientId>` payloads (AWS lifecycle events). */
export interface PresenceInfo {
  clientId: string;
  timestampMs: number;
  sessionIdentifier: string;
  principalIdentifier: string;
  ipAddress: string;
  versionNumber: number;
}

/** AWS's disconnectReason values the stand-in produces. */
export type DisconnectReason =
  | 'CLIENT_INITIATED_DISCONNECT'
  | 'CONNECTION_LOST'
  | 'DUPLICATE_CLIENTID'
  | 'FORBIDDEN_ACCESS'
  | 'MQTT_KEEP_ALIVE_TIMEOUT'
  | 'CLIENT_ERROR'
  | 'SERVER_INITIATED_DISCONNECT'
  | 'AUTH_ERROR';

/** The lifecycle event of a connect (no reason) or a disconnect (with its reason). */
export function presenceEvent(
  p: PresenceInfo,
  disconnect?: DisconnectReason,
): { topic: string; payload: Buffer } {
  const type = disconnect ? 'disconnected' : 'connected';
  const body: Record<string, unknown> = {
    clientId: p.clientId,
    timestamp: p.timestampMs,
    eventType: type,
    ...(disconnect ? { clientInitiatedDisconnect: disconnect === 'CLIENT_INITIATED_DISCONNECT' } : {}),
    sessionIdentifier: p.sessionIdentifier,
    principalIdentifier: p.principalIdentifier,
    ...(disconnect ? { disconnectReason: disconnect } : {}),
    ipAddress: p.ipAddress,
    versionNumber: p.versionNumber,
  };
  return { topic: `$aws/events/presence/${type}/${p.clientId}`, payload: Buffer.from(JSON.stringify(body)) };
}

/** `$aws/events/certificates/registered/<caCertificateId>` (aws-iot.md §3.5; timestamp in ms). */
export function certificateRegisteredEvent(args: {
  certificateId: string;
  caCertificateId: string;
  timestampMs: number;
  awsAccountId: string;
}): { topic: string; payload: Buffer } {
  return {
    topic: `$aws/events/certificates/registered/${args.caCertificateId}`,
    payload: Buffer.from(
      JSON.stringify({
        certificateId: args.certificateId,
        caCertificateId: args.caCertificateId,
        timestamp: args.timestampMs,
        certificateStatus: 'PENDING_ACTIVATION',
        awsAccountId: args.awsAccountId,
        certificateRegistrationTimestamp: null,
      }),
    ),
  };
}
