/**
 * The station's local cache, so the line keeps running while Redis or the network is down:
 *
 *   <cache>/devices/<serial>.json   what the journal said about one device at prefetch time
 *                                   (a bundle, an allow-list entry, or "not registered yet")
 *   <cache>/batches/<id>.json       what was prefetched for a batch, and when
 *   <cache>/results.ndjson          station results recorded while offline, append-only
 *   <cache>/results.synced          how many bytes of results.ndjson `sync` has replayed
 *   <cache>/visits.ndjson           the exchange log of each visit made offline, append-only
 *   <cache>/visits.synced           how many bytes of visits.ndjson `sync` has replayed
 *
 * Bundles carry certificates and wrapped keys only, never a plaintext private key; visit logs
 * carry the transcript's descriptions only (no key bytes, no PIN), each visit capped like the
 * journal's, and the file as a whole is capped too (VISITS_FILE_MAX). Serials are URI-encoded
 * into file names (a serial may contain `/`).
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { capLines, type DeviceJournal, type VisitLog, STATES } from '../../batch/index.js';
import { DRIVERS, KEY_DELIVERIES, KEY_TYPES } from '../../config/index.js';
import { ProvlineError, messageOf } from '../../core/index.js';
import type { JournalStatus } from './events.js';
import { lookupFromRecord, type BundleLookup, type DeviceLookup } from './lookup.js';
import { ResultEntrySchema, type ResultEntry } from './results.js';
import { offlineRegistration, type RecordResult, type StationStore } from './store.js';

const CACHE_VERSION = 1;

/**
 * The offline visit logs kept at most (bytes of visits.ndjson, synced or not): a line down for
 * days keeps its results in full, and the logs of its first visits; later logs are dropped.
 */
export const VISITS_FILE_MAX = 32 * 1024 * 1024;

const VisitLineSchema = z.object({
  serial: z.string().min(1),
  log: z
    .object({
      v: z.literal(1),
      at: z.number(),
      lines: z.array(z.object({ t: z.number(), dir: z.enum(['>', '<', '!']), text: z.string() })),
    })
    .passthrough(),
});

export interface VisitLine {
  serial: string;
  log: VisitLog;
  /** Byte offset just past this line. */
  end: number;
}

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

  constructor(
    readonly dir: string,
    /** Bytes of offline visit logs kept at most (tests set less). */
    private readonly visitsMax = VISITS_FILE_MAX,
  ) {}

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

  get visitsFile(): string {
    return join(this.dir, 'visits.ndjson');
  }

  private get visitsCursorFile(): string {
    return join(this.dir, 'visits.synced');
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
    return this.append(this.resultsFile, `${JSON.stringify(entry)}\n`).then(() => undefined);
  }

  /**
   * Appends the log of one visit made offline, its lines capped as the journal caps them;
   * false when the file is full (VISITS_FILE_MAX) and the log was dropped.
   */
  appendVisit(serial: string, log: VisitLog): Promise<boolean> {
    const capped = capLines(log.lines);
    const kept: VisitLog = { ...log, lines: capped.lines, omitted: log.omitted + capped.omitted };
    return this.append(this.visitsFile, `${JSON.stringify({ serial, log: kept })}\n`, this.visitsMax);
  }

  /** Appends whole lines, synced to disk, one after another; none past `max` bytes. */
  private append(file: string, line: string, max = Infinity): Promise<boolean> {
    const next = this.appending.then(async () => {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      const fh = await open(file, 'a', 0o600);
      try {
        if ((await fh.stat()).size + Buffer.byteLength(line) > max) return false;
        await fh.appendFile(line);
        await fh.datasync();
        return true;
      } finally {
        await fh.close();
      }
    });
    this.appending = next.catch(() => undefined);
    return next;
  }

  /** Complete result lines from `offset` on (a half-written last line is left for later). */
  async readResults(offset: number): Promise<ResultsRead> {
    const out: ResultsRead = { lines: [], bad: [], end: offset };
    await readLines(this.resultsFile, offset, out, (text, end) =>
      out.lines.push({ entry: ResultEntrySchema.parse(JSON.parse(text)), end }),
    );
    return out;
  }

  /** Complete visit lines from `offset` on, as readResults reads results. */
  async readVisits(offset: number): Promise<{ lines: VisitLine[]; bad: ResultsRead['bad']; end: number }> {
    const out = { lines: [] as VisitLine[], bad: [] as ResultsRead['bad'], end: offset };
    await readLines(this.visitsFile, offset, out, (text, end) => {
      const v = VisitLineSchema.parse(JSON.parse(text));
      out.lines.push({ serial: v.serial, log: v.log as unknown as VisitLog, end });
    });
    return out;
  }

  async readCursor(which: 'results' | 'visits' = 'results'): Promise<number> {
    const file = which === 'results' ? this.cursorFile : this.visitsCursorFile;
    try {
      const v = (JSON.parse(await readFile(file, 'utf8')) as { offset?: unknown }).offset;
      return typeof v === 'number' && v >= 0 ? v : 0;
    } catch {
      return 0;
    }
  }

  async writeCursor(offset: number, which: 'results' | 'visits' = 'results'): Promise<void> {
    await writeAtomic(
      which === 'results' ? this.cursorFile : this.visitsCursorFile,
      JSON.stringify({ offset }),
    );
  }
}

/**
 * Calls `each` with the text of every complete, non-empty line of `file` from `offset` on and
 * the offset past it (a half-written last line is left for later); a line `each` throws on is
 * noted in `out.bad` and skipped. `out.end` ends past the last complete line.
 */
async function readLines(
  file: string,
  offset: number,
  out: { bad: ResultsRead['bad']; end: number },
  each: (text: string, end: number) => void,
): Promise<void> {
  let data: Buffer;
  try {
    data = await readFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  let at = Math.min(offset, data.length);
  for (let nl = data.indexOf(0x0a, at); nl >= 0; at = nl + 1, nl = data.indexOf(0x0a, at)) {
    const text = data.subarray(at, nl).toString('utf8').trim();
    out.end = nl + 1;
    if (!text) continue;
    try {
      each(text, nl + 1);
    } catch (e) {
      out.bad.push({ offset: at, message: messageOf(e).split('\n')[0] ?? '' });
    }
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

  /** Kept in the cache, marked offline, until `station sync` brings it to the journal. */
  async logVisit(serial: string, log: VisitLog): Promise<void> {
    await this.cache.appendVisit(serial, { ...log, offline: true });
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
