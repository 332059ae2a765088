/**
 * `provline station`: the flashing station daemon, one loop per serial port, until SIGTERM
 * (or `--once`: one device per port). `station prefetch` caches a batch's bundles so the line
 * keeps running while Redis is unreachable; `station sync` replays the results recorded
 * locally meanwhile. This file wires config, Redis, the HSM and signals to src/flash/station.
 */
import { ClaimStore } from '../../jobs/claim.js';
import { retireClaimsAtStation } from '../pipeline/claim-lot.js';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { Redis } from 'ioredis';
import type { DeviceJournal } from '../../batch/journal.js';
import { getProfile, type ResolvedProfile } from '../../config/load.js';
import { ProvlineError, messageOf, usageError } from '../../core/errors.js';
import {
  CacheStore,
  FallbackStore,
  JournalStore,
  JsonLinesView,
  StationCache,
  TtyView,
  allVerified,
  checkTarget,
  prefetch,
  runStation,
  syncResults,
  type KeyUnwrapper,
  type StationEvent,
  type StationRun,
  type StationStore,
  type StationView,
} from '../../flash/index.js';
import type { Hsm } from '../../hsm/hsm.js';
import { BatchStore } from '../../jobs/batches.js';
import { Journal } from '../../jobs/journal.js';
import { stationJournal } from '../../jobs/station-store.js';
import { requireRedis } from '../../stack/runtime.js';
import type { CommandContext } from '../context.js';
import { ExitCode, EXIT } from '../exit.js';
import { intOption } from '../options.js';
import { deviceRegistrar, stationRegisters } from '../pipeline/registrar.js';

interface StationCliOptions {
  port: string[];
  profile?: string;
  once?: boolean;
  json?: boolean;
  stationId: string;
  cache?: string;
  baud: number;
  grace: number;
}

export function registerStation(program: Command, ctx: () => CommandContext): void {
  const station = program
    .command('station')
    .description(
      'Flash devices on serial ports: identify, look up, write, verify and record each one (until SIGTERM, or --once)',
    )
    .option(
      '--port <port>',
      'a tty path or tcp://host:port (ser2net); repeat for more ports',
      (v: string, prev: string[]) => [...prev, v],
      [],
    )
    .option('--profile <name>', 'the product profile this station runs (its driver speaks to the devices)')
    .option(
      '--once',
      'each port handles one device, then the station exits (0 if every one was verified, 4 if not)',
    )
    .option('--json', 'print events as JSON lines (also when stdout is not a terminal)')
    .option('--station-id <id>', 'the name recorded with each result', hostname())
    .option(
      '--cache <dir>',
      'prefetched bundles to use, and where to record results, while Redis is unreachable',
    )
    .option(
      '--baud <n>',
      'line rate of local ttys (ser2net sets its own)',
      intOption('--baud', 300, 4_000_000),
      115_200,
    )
    .option(
      '--grace <ms>',
      'on SIGTERM, how long writes in progress may take to finish before they are abandoned',
      intOption('--grace', 0, 600_000),
      10_000,
    )
    .addHelpText(
      'after',
      '\nA second SIGTERM (or Ctrl-C) abandons writes in progress at once. See docs/station.md.\n',
    )
    .action(async (opts: StationCliOptions) => runStationCommand(ctx(), opts));

  station
    .command('prefetch')
    .description("Copy a batch's device bundles (no plaintext keys) into a local cache for offline flashing")
    .requiredOption('--batch <id>', 'the batch to prefetch')
    .option('--cache <dir>', 'the cache directory (created if missing; required)')
    .option('--json', 'print as JSON')
    .action(async (_: unknown, cmd: Command) => {
      const c = ctx();
      const opts = subOptions<{ batch: string }>(cmd);
      await withJournal(c, async (journal) => {
        const summary = await prefetch({
          journal,
          batchId: opts.batch,
          cache: new StationCache(resolve(opts.cache)),
        });
        if (opts.json) c.json(summary);
        else
          c.print(
            `prefetched batch ${summary.batchId} (profile ${summary.profile}) into ${resolve(opts.cache)}: ` +
              `${summary.bundles} bundles, ${summary.register} to register at the station, ${summary.pending} not registered yet`,
          );
      });
    });

  station
    .command('sync')
    .description('Replay the results a station recorded in its cache while offline into the journal')
    .option('--cache <dir>', 'the cache directory the station ran with (required)')
    .option('--json', 'print as JSON')
    .action(async (_: unknown, cmd: Command) => {
      const c = ctx();
      const opts = subOptions(cmd);
      const cache = new StationCache(resolve(opts.cache));
      if (!cache.exists())
        throw new ProvlineError('STATION_CACHE_NOT_FOUND', `there is no station cache at ${cache.dir}`, {
          kind: 'invalid-input',
          hint: 'pass the --cache directory the station ran with',
        });
      const summary = await withJournal(c, (journal) => syncResults({ cache, journal }));
      if (opts.json) c.json(summary);
      else {
        c.print(
          `synced ${summary.applied + summary.superseded + summary.rejected.length} results: ${summary.applied} applied, ` +
            `${summary.superseded} already verified, ${summary.rejected.length} rejected; ${summary.visits} visit logs`,
        );
        for (const r of summary.rejected) c.print(`  ${r.serial} (batch ${r.batchId}) ${r.to}: ${r.reason}`);
        for (const d of summary.damaged) c.print(`  damaged line at byte ${d.offset}: ${d.message}`);
        for (const d of summary.damagedVisits)
          c.print(`  damaged visit log at byte ${d.offset} of visits.ndjson: ${d.message}`);
      }
      if (summary.rejected.length || summary.damaged.length) throw new ExitCode(EXIT.partial);
    });
}

/**
 * A subcommand's options with the `station` options it shares (`--cache`, `--json`), which
 * commander hands to the parent when they come after the subcommand's name.
 */
function subOptions<T extends object = object>(cmd: Command): T & { cache: string; json?: boolean } {
  const opts = cmd.optsWithGlobals<T & { cache?: string; json?: boolean }>();
  if (!opts.cache) throw usageError(`${cmd.name()} needs --cache <dir>`);
  return { ...opts, cache: opts.cache };
}

async function withJournal<T>(c: CommandContext, fn: (j: DeviceJournal) => Promise<T>): Promise<T> {
  const redis = new Redis(requireRedis(c.runtime), { lazyConnect: true, maxRetriesPerRequest: 2 });
  redis.on('error', () => undefined);
  try {
    await redis.connect().catch((e: unknown) => {
      throw unreachable(e);
    });
    const journal = new Journal(redis, { prefix: c.loaded.config.redis.prefix });
    const claims = new ClaimStore(redis, c.loaded.config.redis.prefix);
    return await fn(stationJournal(journal, new BatchStore(redis, journal.keys), (p) => claims.view(p)));
  } finally {
    redis.disconnect();
  }
}

function unreachable(cause: unknown): ProvlineError {
  return new ProvlineError(
    'STATION_JOURNAL_UNREACHABLE',
    `the journal (Redis) is unreachable: ${messageOf(cause)}`,
    {
      cause,
      hint: 'check redis.url and the network, or run `provline stack up` for the local stack',
    },
  );
}

async function runStationCommand(c: CommandContext, opts: StationCliOptions): Promise<void> {
  if (!opts.port.length) throw usageError('give at least one --port (a tty path or tcp://host:port)');
  if (!opts.profile) throw usageError('give the --profile this station runs');
  for (const p of opts.port) checkTarget(p);
  const profile = getProfile(c.loaded, opts.profile);
  const view: StationView =
    opts.json || !(c.out as NodeJS.WriteStream).isTTY ? new JsonLinesView(c.out) : new TtyView(c.out);
  const emit = (e: StationEvent): void => {
    view.handle(e);
    if (e.event === 'result' && e.outcome !== 'verified' && e.outcome !== 'already')
      c.logger.info({ station: opts.stationId, ...e }, 'station result');
  };

  const cache = opts.cache ? new StationCache(resolve(opts.cache)) : undefined;
  const conn: { redis?: Redis } = {};
  let hsm: Promise<Hsm> | undefined;
  const stopCtl = new AbortController();
  const abortCtl = new AbortController();
  let grace: NodeJS.Timeout | undefined;
  const onSignal = (): void => {
    if (stopCtl.signal.aborted) abortCtl.abort();
    else {
      stopCtl.abort();
      grace = setTimeout(() => abortCtl.abort(), opts.grace);
    }
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  let run: StationRun;
  try {
    // The HSM is opened when the first device needs it (a plain key to unwrap, a device's CSR
    // for the factory CA to sign); a failed open is retried by the next device.
    const openKeys = (): Promise<Hsm> =>
      (hsm ??= c
        .hsmSettings()
        .then(async (s) => (await import('../../hsm/hsm.js')).openHsm(s, { env: c.env }))
        .catch((e: unknown) => {
          hsm = undefined;
          throw e;
        }));
    const keys = (): Promise<KeyUnwrapper> => openKeys();
    const store = await openStore(c, profile, cache, (r) => (conn.redis = r), emit, openKeys);
    run = await runStation({
      stationId: opts.stationId,
      profile: {
        name: profile.name,
        driver: profile.driver,
        driverSettings: profile.driverSettings,
        ...(profile.station.firstConnect !== undefined ? { firstConnect: profile.station.firstConnect } : {}),
      },
      ports: opts.port,
      once: opts.once ?? false,
      baudRate: opts.baud,
      store,
      keys,
      stop: stopCtl.signal,
      abort: abortCtl.signal,
      onEvent: emit,
    });
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    clearTimeout(grace);
    view.close();
    conn.redis?.disconnect();
    if (hsm) (await hsm.catch(() => undefined))?.close();
  }
  const ok = opts.once
    ? allVerified(run.summary) && run.portErrors.length === 0 && run.results.length === opts.port.length
    : run.portErrors.length === 0 && run.summary.abandoned === 0 && run.summary.unrecorded === 0;
  if (!ok) throw new ExitCode(EXIT.partial);
}

/**
 * The journal (when Redis is configured), with the cache standing in while it is unreachable.
 * Without a cache, Redis must answer at start.
 */
async function openStore(
  c: CommandContext,
  profile: ResolvedProfile,
  cache: StationCache | undefined,
  opened: (r: Redis) => void,
  emit: (e: StationEvent) => void,
  openHsm: () => Promise<Hsm>,
): Promise<StationStore> {
  const url = c.runtime.redisUrl;
  if (!url && !cache) requireRedis(c.runtime);
  let online: StationStore | undefined;
  let startOffline = false;
  if (url) {
    const redis = new Redis(url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      connectTimeout: 2_000,
      commandTimeout: 5_000,
      retryStrategy: (n) => Math.min(250 * n, 3_000),
    });
    redis.on('error', () => undefined);
    opened(redis);
    try {
      await redis.connect();
    } catch (e) {
      if (!cache) throw unreachable(e);
      startOffline = true;
    }
    const journal = new Journal(redis, { prefix: c.loaded.config.redis.prefix });
    const batches = new BatchStore(redis, journal.keys);
    const register = stationRegisters(profile)
      ? await deviceRegistrar(c, redis, journal, batches, profile, openHsm)
      : undefined;
    const claims = new ClaimStore(redis, c.loaded.config.redis.prefix);
    if (!startOffline) await retireClaimsAtStation(c, redis, c.loaded.config.redis.prefix, profile);
    online = new JournalStore(
      stationJournal(journal, batches, (p) => claims.view(p)),
      register,
    );
  }
  const fallback = new FallbackStore(online, cache && new CacheStore(cache), {
    startOffline,
    onStatus: (status, message) => emit({ event: 'journal', status, ...(message ? { message } : {}) }),
  });
  return fallback;
}
