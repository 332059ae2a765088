/**
 * Where a station looks devices up and records results: the journal (through the narrow
 * `DeviceJournal` of src/batch/journal.ts, whatever stores it), the local cache (prefetched
 * bundles, results log), or the journal with the cache standing in while it is unreachable.
 * The station itself only sees `StationStore`.
 */
import type { DeviceJournal, DeviceRecord, RegisterCsr, VisitLog } from '../../batch/index.js';
import { ProvlineError, messageOf } from '../../core/index.js';
import type { JournalStatus, RecordedIn } from './events.js';
import { lookupFromRecord, type BundleLookup, type DeviceLookup, type RegisterLookup } from './lookup.js';
import { describeOutcome, interpret, transitionFor, type Applied, type ResultEntry } from './results.js';

export interface RecordResult {
  in: RecordedIn;
  applied: Applied;
  /** What the journal said, when it rejected the result. */
  reason?: string;
}

export interface RegisterRequest {
  lookup: RegisterLookup;
  csrPem: string;
  signal?: AbortSignal;
}

export interface StationStore {
  status(): JournalStatus;
  lookup(serial: string): Promise<DeviceLookup>;
  record(entry: ResultEntry): Promise<RecordResult>;
  /** Whether a device-key device can be registered right now. */
  canRegister(): boolean;
  /** Registers the device's CSR (registrar `single` mode) and returns its bundle. */
  register(req: RegisterRequest): Promise<BundleLookup>;
  /** Keeps the log of one visit (where the store can; the journal bounds it per serial). */
  logVisit?(serial: string, log: VisitLog): Promise<void>;
}

/**
 * The journal: the source of truth whenever it answers. `registerCsr` (the registrar's single
 * mode, wired by the CLI) is needed only for device-key profiles.
 */
export class JournalStore implements StationStore {
  constructor(
    private readonly journal: DeviceJournal,
    private readonly registerCsr?: RegisterCsr,
  ) {}

  status(): JournalStatus {
    return 'online';
  }

  async lookup(serial: string): Promise<DeviceLookup> {
    const [rec] = await this.journal.records([serial]);
    return rec ? this.fromRecord(rec) : { kind: 'unknown', serial };
  }

  async record(entry: ResultEntry): Promise<RecordResult> {
    const [outcome] = await this.journal.transition([transitionFor(entry)]);
    if (!outcome) throw new Error('the journal answered no outcome for a transition');
    const applied = interpret(outcome);
    return {
      in: 'journal',
      applied,
      ...(applied === 'rejected' ? { reason: describeOutcome(outcome) } : {}),
    };
  }

  canRegister(): boolean {
    return this.registerCsr !== undefined;
  }

  async logVisit(serial: string, log: VisitLog): Promise<void> {
    await this.journal.logVisit?.(serial, log);
  }

  async register(req: RegisterRequest): Promise<BundleLookup> {
    if (!this.registerCsr) throw offlineRegistration(req.lookup.serial);
    const rec = await this.registerCsr({
      batchId: req.lookup.batchId,
      serial: req.lookup.serial,
      csrPem: req.csrPem,
      ...(req.signal ? { signal: req.signal } : {}),
    });
    const found = await this.fromRecord(rec);
    if (found.kind !== 'bundle')
      throw new ProvlineError(
        'STATION_REGISTRATION_INCOMPLETE',
        `registering device ${req.lookup.serial} ended in state ${rec.state} without a certificate`,
        { retryable: true, details: { serial: rec.serial, state: rec.state, error: rec.error } },
      );
    return found;
  }

  private async fromRecord(rec: DeviceRecord): Promise<DeviceLookup> {
    return lookupFromRecord(rec, await this.journal.batch(rec.batch));
  }
}

export function offlineRegistration(serial: string): ProvlineError {
  return new ProvlineError(
    'STATION_OFFLINE',
    `device ${serial} cannot be registered while the journal is unreachable`,
    {
      retryable: true,
    },
  );
}

export interface FallbackOptions {
  /** Redis did not answer at start: begin on the cache (the journal is tried after retryMs). */
  startOffline?: boolean;
  /** How long to stay on the cache after Redis failed before trying it again. */
  retryMs?: number;
  now?: () => number;
  onStatus?: (status: JournalStatus, message?: string) => void;
}

/**
 * The journal while it answers; the cache (prefetched bundles, local results log) while it
 * does not. A failure that is not a ProvlineError from the journal is taken as "Redis is
 * unreachable" (connection refused, closed, timed out): the call is served by the cache, and
 * the journal is tried again after `retryMs`.
 */
export class FallbackStore implements StationStore {
  private downUntil = 0;
  private current: JournalStatus;
  private readonly retryMs: number;
  private readonly now: () => number;

  constructor(
    private readonly online: StationStore | undefined,
    private readonly cache: StationStore | undefined,
    private readonly options: FallbackOptions = {},
  ) {
    if (!online && !cache) throw new Error('FallbackStore needs a journal or a cache');
    this.retryMs = options.retryMs ?? 5_000;
    this.now = options.now ?? Date.now;
    this.current = !online ? 'cache' : options.startOffline && cache ? 'offline' : 'online';
    if (this.current === 'offline') this.downUntil = this.now() + this.retryMs;
  }

  status(): JournalStatus {
    return this.current;
  }

  lookup(serial: string): Promise<DeviceLookup> {
    return this.either((s) => s.lookup(serial));
  }

  record(entry: ResultEntry): Promise<RecordResult> {
    return this.either((s) => s.record(entry));
  }

  canRegister(): boolean {
    return this.online !== undefined && this.current === 'online' && this.online.canRegister();
  }

  register(req: RegisterRequest): Promise<BundleLookup> {
    if (!this.online || !this.canRegister()) return Promise.reject(offlineRegistration(req.lookup.serial));
    return this.online.register(req);
  }

  /** To the journal while it answers; to the cache (synced later) while it does not. */
  async logVisit(serial: string, log: VisitLog): Promise<void> {
    await this.either((s) => s.logVisit?.(serial, log) ?? Promise.resolve());
  }

  private async either<T>(call: (s: StationStore) => Promise<T>): Promise<T> {
    if (this.online && this.now() >= this.downUntil) {
      try {
        const v = await call(this.online);
        this.set('online');
        return v;
      } catch (e) {
        if (e instanceof ProvlineError) throw e;
        this.downUntil = this.now() + this.retryMs;
        if (!this.cache) throw unreachable(e);
        this.set('offline', messageOf(e));
      }
    }
    if (!this.cache) throw unreachable(undefined);
    return call(this.cache);
  }

  private set(status: JournalStatus, message?: string): void {
    if (status === this.current) return;
    this.current = status;
    this.options.onStatus?.(status, message);
  }
}

function unreachable(cause: unknown): ProvlineError {
  return new ProvlineError(
    'STATION_JOURNAL_UNREACHABLE',
    `the journal (Redis) is unreachable${cause ? `: ${messageOf(cause)}` : ''}`,
    {
      retryable: true,
      cause,
      hint: 'check the network and Redis; prefetch bundles (`provline station prefetch`) and run with --cache to keep the line going offline',
    },
  );
}
