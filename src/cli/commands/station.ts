/**
 * `provline station`: the flashing station daemon, one loop per serial port, until SIGTERM
 * (or `--once`: one device per port). `station prefetch` caches a batch's bundles so the line
 * keeps running while Redis is unreachable; `station sync` replays the results recorded
 * locally meanwhile. This file parses and checks the options; the daemon itself (Redis, the
 * cache, the HSM, signals) is the station entry point, workers/station.ts.
 */
import {
  ClaimStore,
  BatchStore,
  Journal,
  stationJournal,
  stationJournalUnreachable,
} from '../../jobs/index.js';
import { retireClaimsAtStation } from '../pipeline/claim-lot.js';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { Redis } from 'ioredis';
import type { DeviceJournal } from '../../batch/index.js';
import { getProfile } from '../../config/index.js';
import { ProvlineError, usageError } from '../../core/index.js';
import {
  JsonLinesView,
  StationCache,
  TtyView,
  checkTarget,
  prefetch,
  syncResults,
  type StationView,
} from '../../flash/index.js';
import { requireRedis } from '../../stack/index.js';
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
      throw stationJournalUnreachable(e);
    });
    const journal = new Journal(redis, { prefix: c.loaded.config.redis.prefix });
    const claims = new ClaimStore(redis, c.loaded.config.redis.prefix);
    return await fn(stationJournal(journal, new BatchStore(redis, journal.keys), (p) => claims.view(p)));
  } finally {
    redis.disconnect();
  }
}

async function runStationCommand(c: CommandContext, opts: StationCliOptions): Promise<void> {
  if (!opts.port.length) throw usageError('give at least one --port (a tty path or tcp://host:port)');
  if (!opts.profile) throw usageError('give the --profile this station runs');
  for (const p of opts.port) checkTarget(p);
  const profile = getProfile(c.loaded, opts.profile);
  if (!c.runtime.redisUrl && !opts.cache) requireRedis(c.runtime);
  const view: StationView =
    opts.json || !(c.out as NodeJS.WriteStream).isTTY ? new JsonLinesView(c.out) : new TtyView(c.out);
  const { ok } = await c.entries.station({
    stationId: opts.stationId,
    profile,
    ports: opts.port,
    once: opts.once ?? false,
    baudRate: opts.baud,
    graceMs: opts.grace,
    redisUrl: c.runtime.redisUrl,
    prefix: c.loaded.config.redis.prefix,
    ...(opts.cache ? { cacheDir: resolve(opts.cache) } : {}),
    view,
    log: c.logger,
    hsmSettings: () => c.hsmSettings(),
    env: c.env,
    ...(stationRegisters(profile)
      ? {
          registrar: (j, openHsm) => deviceRegistrar(c, j.redis, j.journal, j.batches, profile, openHsm),
        }
      : {}),
    // A claim line deactivates the claims whose grace period after a rotation is over.
    onJournal: async (redis) => {
      await retireClaimsAtStation(c, redis, c.loaded.config.redis.prefix, profile);
    },
  });
  if (!ok) throw new ExitCode(EXIT.partial);
}
