/**
 * The station daemon: one independent loop per port (port.ts), each device visit (visit.ts)
 * looked up and recorded through one StationStore. A port that fails never stops the others.
 *
 * Stopping has two signals: `stop` ends the waiting (no new device is taken) and lets visits
 * in progress finish; `abort` abandons them too: every driver call gets it, a write in flight
 * ends at the next command, and nothing is recorded as done for an abandoned visit.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import type { DriverName } from '../../config/index.js';
import { ProvlineError, messageOf } from '../../core/index.js';
import type { DriverTiming } from '../drivers/index.js';
import { openTransport, type OpenTransport } from '../transport/index.js';
import { emptySummary, type DeviceResult, type StationEvent, type StationSummary } from './events.js';
import { visitLog } from './exchange-log.js';
import { DEFAULT_PROBE, runPort, type ProbeOptions } from './port.js';
import type { StationStore } from './store.js';
import { visitDevice, type KeyUnwrapper } from './visit.js';

export interface StationOptions {
  stationId: string;
  /**
   * The profile this station runs: its driver speaks to every device on its ports.
   * `firstConnect` is the profile's `station.firstConnect` (unset: whenever the driver can).
   */
  profile: {
    name: string;
    driver: DriverName;
    driverSettings: Record<string, string | number | boolean>;
    firstConnect?: boolean;
  };
  ports: string[];
  /** Each port handles one device, then the station returns. */
  once?: boolean;
  baudRate?: number;
  store: StationStore;
  keys?: () => Promise<KeyUnwrapper>;
  /** Driver timing overrides for visits (slow devices, tests). */
  timing?: DriverTiming;
  probe?: Partial<ProbeOptions>;
  stop?: AbortSignal;
  abort?: AbortSignal;
  onEvent?: (e: StationEvent) => void;
  open?: OpenTransport;
  clock?: () => number;
  now?: () => number;
  newId?: () => string;
  nonce?: () => Buffer;
}

export interface StationRun {
  summary: StationSummary;
  results: DeviceResult[];
  /** Ports whose loop ended on an error (the others ran on). */
  portErrors: { port: string; code: string; message: string }[];
}

export async function runStation(o: StationOptions): Promise<StationRun> {
  const emit = o.onEvent ?? ((): void => undefined);
  const abort = o.abort ?? new AbortController().signal;
  // Abandoning implies stopping.
  const stop = AbortSignal.any([o.stop ?? new AbortController().signal, abort]);
  // Every port waits on both signals at once (probes, pauses, driver calls).
  setMaxListeners(Math.max(10, o.ports.length * 4), stop, abort);
  const probe = { ...DEFAULT_PROBE, ...o.probe };
  const clock = o.clock ?? ((): number => performance.now());
  const now = o.now ?? Date.now;
  emit({
    event: 'station',
    stationId: o.stationId,
    profile: o.profile.name,
    driver: o.profile.driver,
    ports: o.ports,
    journal: o.store.status(),
  });
  const run: StationRun = { summary: emptySummary(), results: [], portErrors: [] };
  const port = async (target: string): Promise<void> => {
    try {
      const results = await runPort({
        target,
        baudRate: o.baudRate ?? 115_200,
        once: o.once ?? false,
        driver: o.profile.driver,
        settings: o.profile.driverSettings,
        timing: o.timing,
        probe,
        stop,
        open: o.open ?? openTransport,
        emit,
        clock,
        visit: async ({ serial, startedAt, makeDriver, exchange }) => {
          const startedAtEpoch = now() - (clock() - startedAt);
          const result = await visitDevice(
            {
              stationId: o.stationId,
              port: target,
              station: { profile: o.profile.name, driver: o.profile.driver },
              ...(o.profile.firstConnect !== undefined ? { firstConnect: o.profile.firstConnect } : {}),
              store: o.store,
              ...(o.keys ? { keys: o.keys } : {}),
              makeDriver,
              emit,
              signal: abort,
              clock,
              now,
              newId: o.newId ?? randomUUID,
              nonce: o.nonce ?? ((): Buffer => randomBytes(32)),
            },
            serial,
            startedAt,
          );
          // Kept for devices the journal knows (a refused stranger leaves no trace); a log that
          // cannot be written never changes the visit's result.
          if (result.batchId && o.store.logVisit)
            await o.store
              .logVisit(
                serial,
                visitLog(result, {
                  stationId: o.stationId,
                  driver: o.profile.driver,
                  startedAtEpoch,
                  exchange,
                }),
              )
              .catch(() => undefined);
          return result;
        },
      });
      run.results.push(...results);
    } catch (e) {
      const code = e instanceof ProvlineError ? e.code : 'STATION_INTERNAL';
      run.portErrors.push({ port: target, code, message: messageOf(e) });
      emit({ event: 'port', port: target, status: 'error', message: `${messageOf(e)} [${code}]` });
    }
  };
  await Promise.all(o.ports.map(port));
  for (const r of run.results) {
    run.summary[r.outcome]++;
    if (r.connected) run.summary.connected++;
    if (r.unrecorded) run.summary.unrecorded++;
  }
  emit({ event: 'summary', ...run.summary });
  return run;
}
