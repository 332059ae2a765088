/**
 * The station's local cache, so the line keeps running while Redis or the network is down:
 *
 *   <cache>/devices/<serial>.json   what the journal said about one device at prefetch time
 *                                   (a bundle, an allow-list entry, or "not registered yet")
 *   <cache>/batches/<id>.json       what was prefetched for a batch, and when
 *   <cache>/results.ndjson          station results recorded while offline, append-only
 *   <cache>/results.synced          how many bytes of results.ndjson `sync` has replayed
 *
 * Bundles carry certificates and wrapped keys only, never a plaintext private key. Serials are
 * URI-encoded into file names (a serial may contain `/`).
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import type { DeviceJournal } from '../../batch/journal.js';
import { STATES } from '../../batch/states.js';
import { DRIVERS, KEY_DELIVERIES, KEY_TYPES } from '../../config/schema.js';
import { ProvlineError, messageOf } from '../../core/errors.js';
import type { JournalStatus } from './events.js';
import { lookupFromRecord, type BundleLookup, type DeviceLookup } from './lookup.js';
import { ResultEntrySchema, type ResultEntry } from './results.js';
import { offlineRegistration, type RecordResult, type StationStore } from './store.js';

const CACHE_VERSION = 1;

const settings = z.record(z.string(), z.union([z.string(), z.number(), z.boolean()]));
const state = z.enum(STATES);

const BundleSchema = z
  .object({
    version: z.literal(1),
    batchId: z.string(),
    serial: z.string(),
    thingName: z.string(),
    profile: z.string(),
    certificateId: z.string(),
    certificateArn: z.string(),
    certificatePem: z.string(),
    rootCaPem: z.string(),
    endpoint: z.string(),
    keyType: z.enum(KEY_TYPES),
    keyDelivery: z.enum(KEY_DELIVERIES),
    wrappedKey: z.string().optional(),
    kekId: z.string().optional(),
    driver: z.enum(DRIVERS),
    driverSettings: settings,
  })
  .strict();

const base = { serial: z.string().min(1), batchId: z.string().min(1), state };
const LookupSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('bundle'), ...base, bundle: BundleSchema, kekLabel: z.string() }),
  z.object({
    kind: z.literal('register'),
    ...base,
    profile: z.string(),
    driver: z.enum(DRIVERS),
    driverSettings: settings,
    thingName: z.string(),
    subject: z.string(),
    csrPem: z.string().optional(),
  }),
  z.object({
    kind: z.literal('pending'),
    ...base,
    profile: z.string(),
    error: z.object({ code: z.string(), message: z.string() }).optional(),
  }),
]);

const CachedDeviceSchema = z.object({
  v: z.literal(CACHE_VERSION),
  fetchedAt: z.number(),
  lookup: LookupSchema,
});

export interface ResultLine {
  entry: ResultEntry;
  /** Byte offset just past this line. */
  end: number;
}

export interface ResultsRead {
  lines: ResultLine[];
  /** Lines that do not parse: reported, skipped over. */
  bad: { offset: number; message: string }[];
  /** Offset past the last complete line read. */
  end: number;
}

export class StationCache {
  private appending: Promise<unknown> = Promise.resolve();

  constructor(readonly dir: string) {}

  /** Whether the directory exists at all (a mistyped --cache shows up here). */
  exists(): boolean {
    return existsSync(this.dir);
  }

  get resultsFile(): string {
    return join(this.dir, 'results.ndjson');
  }

  private get cursorFile(): string {
    return join(this.dir, 'results.synced');
  }

  private devicePath(serial: string): string {
    return join(this.dir, 'devices', `${encodeURIComponent(serial)}.json`);
  }

  async readDevice(serial: string): Promise<DeviceLookup | undefined> {
    let text: string;
    try {
      text = await readFile(this.devicePath(serial), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    let parsed;
    try {
      parsed = CachedDeviceSchema.parse(JSON.parse(text));
    } catch (e) {
      throw cacheInvalid(this.devicePath(serial), e);
    }
    if (parsed.lookup.serial !== serial)
      throw cacheInvalid(this.devicePath(serial), `it holds serial ${parsed.lookup.serial}`);
    return parsed.lookup;
  }

  async writeDevice(lookup: Exclude<DeviceLookup, { kind: 'unknown' }>, fetchedAt: number): Promise<void> {
    await writeAtomic(
      this.devicePath(lookup.serial),
      JSON.stringify({ v: CACHE_VERSION, fetchedAt, lookup }),
    );
  }

  async writeBatch(summary: PrefetchSummary): Promise<void> {
    await writeAtomic(join(this.dir, 'batches', `${summary.batchId}.json`), JSON.stringify(summary, null, 2));
  }

  /** Appends one result and syncs it to disk; appends from every port go one after another. */
  appendResult(entry: ResultEntry): Promise<void> {
    const line = `${JSON.stringify(entry)}\n`;
    const next = this.appending.then(async () => {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      const fh = await open(this.resultsFile, 'a', 0o600);
      try {
        await fh.appendFile(line);
        await fh.datasync();
      } finally {
        await fh.close();
      }
    });
    this.appending = next.catch(() => undefined);
    return next;
  }

  /** Complete result lines from `offset` on (a half-written last line is left for later). */
  async readResults(offset: number): Promise<ResultsRead> {
    let data: Buffer;
    try {
      data = await readFile(this.resultsFile);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { lines: [], bad: [], end: offset };
      throw e;
    }
    const out: ResultsRead = { lines: [], bad: [], end: offset };
    let at = Math.min(offset, data.length);
    for (let nl = data.indexOf(0x0a, at); nl >= 0; at = nl + 1, nl = data.indexOf(0x0a, at)) {
      const text = data.subarray(at, nl).toString('utf8').trim();
      out.end = nl + 1;
      if (!text) continue;
      try {
        out.lines.push({ entry: ResultEntrySchema.parse(JSON.parse(text)), end: nl + 1 });
      } catch (e) {
        out.bad.push({ offset: at, message: messageOf(e).split('\n')[0] ?? '' });
      }
    }
    return out;
  }

  async readCursor(): Promise<number> {
    try {
      const v = (JSON.parse(await readFile(this.cursorFile, 'utf8')) as { offset?: unknown }).offset;
      return typeof v === 'number' && v >= 0 ? v : 0;
    } catch {
      return 0;
    }
  }

  async writeCursor(offset: number): Promise<void> {
    await writeAtomic(this.cursorFile, JSON.stringify({ offset }));
  }
}

async function writeAtomic(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.${randomUUID()}.tmp`;
  await writeFile(tmp, text, { mode: 0o600 });
  await rename(tmp, path);
}

function cacheInvalid(path: string, cause: unknown): ProvlineError {
  return new ProvlineError(
    'STATION_CACHE_INVALID',
    `the cache file ${path} is damaged: ${messageOf(cause).split('\n')[0]}`,
    {
      cause,
      hint: 'prefetch the batch again (`provline station prefetch --batch <id> --cache <dir>`)',
    },
  );
}

/** The cache as a StationStore: prefetched lookups, results to the local log. */
export class CacheStore implements StationStore {
  constructor(readonly cache: StationCache) {}

  status(): JournalStatus {
    return 'cache';
  }

  async lookup(serial: string): Promise<DeviceLookup> {
    return (await this.cache.readDevice(serial)) ?? { kind: 'unknown', serial };
  }

  async record(entry: ResultEntry): Promise<RecordResult> {
    await this.cache.appendResult(entry);
    return { in: 'local', applied: 'applied' };
  }

  canRegister(): boolean {
    return false;
  }

  register(req: { lookup: { serial: string } }): Promise<BundleLookup> {
    return Promise.reject(offlineRegistration(req.lookup.serial));
  }
}

export interface PrefetchSummary {
  batchId: string;
  profile: string;
  fetchedAt: string;
  /** Devices written to the cache, by what the station will do with them. */
  bundles: number;
  register: number;
  pending: number;
  /** Serials listed in the batch whose record now belongs to another batch. */
  moved: number;
}

/** Writes what the journal knows about every device of a batch into the cache. */
export async function prefetch(req: {
  journal: DeviceJournal;
  batchId: string;
  cache: StationCache;
  now?: () => number;
  pageSize?: number;
}): Promise<PrefetchSummary> {
  const now = req.now ?? Date.now;
  const batch = await req.journal.batch(req.batchId);
  const { plan } = batch;
  const fetchedAt = now();
  const summary: PrefetchSummary = {
    batchId: req.batchId,
    profile: plan.profile.name,
    fetchedAt: new Date(fetchedAt).toISOString(),
    bundles: 0,
    register: 0,
    pending: 0,
    moved: 0,
  };
  const page = req.pageSize ?? 500;
  for (let start = 0; ; start += page) {
    const serials = await req.journal.serials(req.batchId, start, page);
    if (!serials.length) break;
    const records = await req.journal.records(serials);
    for (const rec of records) {
      if (!rec) continue;
      if (rec.batch !== req.batchId) {
        summary.moved++;
        continue;
      }
      const lookup = lookupFromRecord(rec, batch);
      if (lookup.kind === 'unknown') continue;
      await req.cache.writeDevice(lookup, fetchedAt);
      if (lookup.kind === 'bundle') summary.bundles++;
      else if (lookup.kind === 'register') summary.register++;
      else summary.pending++;
    }
    if (serials.length < page) break;
  }
  await req.cache.writeBatch(summary);
  return summary;
}
