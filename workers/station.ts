/**
 * The station daemon process (`provline station`): one loop per serial port over the journal
 * (Redis), with the prefetched cache standing in while Redis is unreachable, the HSM opened when
 * the first device needs it, until SIGTERM or SIGINT (or, with `once`, one device per port).
 * The first signal stops taking devices and gives writes in progress `graceMs` to finish; a
 * second abandons them. The CLI parses the options and calls `runStationDaemon` through its
 * entry points (src/cli/entries.ts, wired by workers/cli.ts), then turns `ok` into the exit code.
 */
import { Redis } from 'ioredis';
import type { StationDaemonOptions, StationDaemonRun } from '../src/cli/index.js';
import {
  CacheStore,
  FallbackStore,
  JournalStore,
  StationCache,
  allVerified,
  runStation,
  type KeyUnwrapper,
  type StationEvent,
  type StationStore,
} from '../src/flash/index.js';
import type { Hsm } from '../src/hsm/index.js';
import {
  BatchStore,
  ClaimStore,
  Journal,
  stationJournal,
  stationJournalUnreachable,
} from '../src/jobs/index.js';

export async function runStationDaemon(o: StationDaemonOptions): Promise<StationDaemonRun> {
  const emit = (e: StationEvent): void => {
    o.view.handle(e);
    if (e.event === 'result' && e.outcome !== 'verified' && e.outcome !== 'already')
      o.log.info({ station: o.stationId, ...e }, 'station result');
  };
  const cache = o.cacheDir ? new StationCache(o.cacheDir) : undefined;
  const conn: { redis?: Redis } = {};
  let hsm: Promise<Hsm> | undefined;
  const stopCtl = new AbortController();
  const abortCtl = new AbortController();
  let grace: NodeJS.Timeout | undefined;
  const onSignal = (): void => {
    if (stopCtl.signal.aborted) abortCtl.abort();
    else {
      stopCtl.abort();
      grace = setTimeout(() => abortCtl.abort(), o.graceMs);
    }
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    // The HSM is opened when the first device needs it (a plain key to unwrap, a device's CSR
    // for the factory CA to sign); a failed open is retried by the next device.
    const openKeys = (): Promise<Hsm> =>
      (hsm ??= o
        .hsmSettings()
        .then(async (s) => (await import('../src/hsm/index.js')).openHsm(s, { env: o.env }))
        .catch((e: unknown) => {
          hsm = undefined;
          throw e;
        }));
    const keys = (): Promise<KeyUnwrapper> => openKeys();
    const store = await openStore(o, cache, (r) => (conn.redis = r), emit, openKeys);
    const run = await runStation({
      stationId: o.stationId,
      profile: {
        name: o.profile.name,
        driver: o.profile.driver,
        driverSettings: o.profile.driverSettings,
        ...(o.profile.station.firstConnect !== undefined
          ? { firstConnect: o.profile.station.firstConnect }
          : {}),
      },
      ports: o.ports,
      once: o.once,
      baudRate: o.baudRate,
      store,
      keys,
      stop: stopCtl.signal,
      abort: abortCtl.signal,
      onEvent: emit,
    });
    const ok = o.once
      ? allVerified(run.summary) && run.portErrors.length === 0 && run.results.length === o.ports.length
      : run.portErrors.length === 0 && run.summary.abandoned === 0 && run.summary.unrecorded === 0;
    return { run, ok };
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    clearTimeout(grace);
    o.view.close();
    conn.redis?.disconnect();
    if (hsm) (await hsm.catch(() => undefined))?.close();
  }
}

/**
 * The journal (when Redis is configured), with the cache standing in while it is unreachable.
 * Without a cache, Redis must answer at start.
 */
async function openStore(
  o: StationDaemonOptions,
  cache: StationCache | undefined,
  opened: (r: Redis) => void,
  emit: (e: StationEvent) => void,
  openHsm: () => Promise<Hsm>,
): Promise<StationStore> {
  let online: StationStore | undefined;
  let startOffline = false;
  if (o.redisUrl) {
    const redis = new Redis(o.redisUrl, {
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
      if (!cache) throw stationJournalUnreachable(e);
      startOffline = true;
    }
    const journal = new Journal(redis, { prefix: o.prefix });
    const batches = new BatchStore(redis, journal.keys);
    const register = o.registrar ? await o.registrar({ redis, journal, batches }, openHsm) : undefined;
    const claims = new ClaimStore(redis, o.prefix);
    if (!startOffline) await o.onJournal?.(redis);
    online = new JournalStore(
      stationJournal(journal, batches, (p) => claims.view(p)),
      register,
    );
  }
  return new FallbackStore(online, cache && new CacheStore(cache), {
    startOffline,
    onStatus: (status, message) => emit({ event: 'journal', status, ...(message ? { message } : {}) }),
  });
}
