/**
 * One port's loop, independent of every other port: open the link (and reopen it when it goes
 * away, as a USB tty does with its device), wait for a device to answer, run its visit, then
 * wait for it to leave (stop answering, or another device answering) before the next one.
 * Presence is probed with the driver's own identity command on short timeouts, on a fresh
 * driver each time, so nothing of one device's session leaks into the next.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { DriverName } from '../../config/index.js';
import { isProvlineError } from '../../core/index.js';
import { createDriver, type DeviceDriver, type DeviceIdentity, type DriverTiming } from '../drivers/index.js';
import type { OpenTransport, Transport } from '../transport/index.js';
import { transcriberFor } from '../protocol/transcript.js';
import type { DeviceResult, StationEvent, StationStep } from './events.js';
import { ExchangeRecorder } from './exchange-log.js';

export interface ProbeOptions {
  /** Pause between presence probes (waiting for a device, or for it to leave). */
  intervalMs: number;
  /** Per-command timeout of a probe (the device's first answer). */
  timeoutMs: number;
  /** Pause before reopening a port that cannot be opened (not plugged in yet). */
  reopenMs: number;
}

export const DEFAULT_PROBE: ProbeOptions = { intervalMs: 250, timeoutMs: 300, reopenMs: 1_000 };

export interface PortOptions {
  target: string;
  baudRate: number;
  once: boolean;
  driver: DriverName;
  /** The station profile's driver settings (used for probing). */
  settings: Record<string, string | number | boolean>;
  timing: DriverTiming | undefined;
  probe: ProbeOptions;
  /** Stop taking new devices (a visit in progress finishes). */
  stop: AbortSignal;
  open: OpenTransport;
  emit(e: StationEvent): void;
  /** Monotonic ms (the visit log's times). */
  clock: () => number;
  /**
   * Runs one device visit over `driver` factory for this link; `exchange` is the visit's log of
   * commands and answers, filled while the visit runs.
   */
  visit(req: {
    serial: string;
    startedAt: number;
    makeDriver: (settings: Record<string, string | number | boolean>) => DeviceDriver;
    exchange: ExchangeRecorder;
  }): Promise<DeviceResult>;
}

type Probe =
  { kind: 'device'; identity: DeviceIdentity; startedAt: number } | { kind: 'absent' } | { kind: 'closed' };

export async function runPort(o: PortOptions): Promise<DeviceResult[]> {
  const results: DeviceResult[] = [];
  const emitStep = (step: StationStep, serial = ''): void =>
    o.emit({ event: 'step', port: o.target, serial, step });
  while (!o.stop.aborted) {
    emitStep('opening');
    const transport = await openWhenPresent(o);
    if (!transport) break;
    o.emit({ event: 'port', port: o.target, status: 'open' });
    try {
      let waiting = false;
      for (;;) {
        if (o.stop.aborted) return results;
        if (!waiting) emitStep('waiting');
        waiting = true;
        const found = await probe(o, transport);
        if (found.kind === 'closed') break;
        if (found.kind === 'absent') {
          await pause(o.probe.intervalMs, o.stop);
          continue;
        }
        waiting = false;
        const { identity } = found;
        o.emit({
          event: 'device',
          port: o.target,
          serial: identity.serial,
          ...(identity.model ? { model: identity.model } : {}),
          ...(identity.firmware ? { firmware: identity.firmware } : {}),
        });
        const exchange = new ExchangeRecorder(transcriberFor(o.driver), o.clock, found.startedAt);
        exchange.attach(transport);
        let result: DeviceResult;
        try {
          result = await o.visit({
            serial: identity.serial,
            startedAt: found.startedAt,
            makeDriver: (settings) =>
              createDriver({
                driver: o.driver,
                transport: exchange.tap(transport),
                settings,
                ...timing(o.timing),
              }),
            exchange,
          });
        } finally {
          exchange.detach();
        }
        results.push(result);
        o.emit({ event: 'result', ...result });
        if (o.once) return results;
        emitStep('remove', identity.serial);
        const gone = await departure(o, transport, identity.serial);
        if (gone === 'stopped') return results;
        o.emit({ event: 'left', port: o.target, serial: identity.serial });
        if (gone === 'closed') break;
      }
    } finally {
      await transport.close().catch(() => undefined);
      o.emit({ event: 'port', port: o.target, status: 'closed' });
    }
  }
  emitStep('stopped');
  return results;
}

const timing = (t: DriverTiming | undefined): { timing?: DriverTiming } => (t ? { timing: t } : {});

/** Opens the port, retrying while it does not exist yet; undefined once stopped. */
async function openWhenPresent(o: PortOptions): Promise<Transport | undefined> {
  let reported = false;
  while (!o.stop.aborted) {
    try {
      return await o.open(o.target, { baudRate: o.baudRate, signal: o.stop });
    } catch (e) {
      if (!isProvlineError(e) || e.code !== 'TRANSPORT_OPEN_FAILED') throw e;
      if (!reported)
        o.emit({ event: 'port', port: o.target, status: 'waiting-for-port', message: e.message });
      reported = true;
      await pause(o.probe.reopenMs, o.stop);
    }
  }
  return undefined;
}

/** Asks for the identity on short timeouts: a device, nobody, or a link that went away. */
async function probe(o: PortOptions, transport: Transport): Promise<Probe> {
  if (!transport.isOpen) return { kind: 'closed' };
  const driver = createDriver({
    driver: o.driver,
    transport,
    settings: o.settings,
    timing: { ...o.timing, commandTimeoutMs: o.probe.timeoutMs, attempts: 1 },
  });
  const startedAt = performance.now();
  try {
    const identity = await driver.readIdentity({ signal: o.stop });
    return { kind: 'device', identity, startedAt };
  } catch (e) {
    if (isProvlineError(e) && e.code === 'DEVICE_DISCONNECTED') return { kind: 'closed' };
    if (!isProvlineError(e)) throw e;
    return { kind: transport.isOpen ? 'absent' : 'closed' };
  } finally {
    await driver.close();
  }
}

/** Waits until `serial` stops answering (or another device answers in its place). */
async function departure(
  o: PortOptions,
  transport: Transport,
  serial: string,
): Promise<'left' | 'closed' | 'stopped'> {
  for (;;) {
    await pause(o.probe.intervalMs, o.stop);
    if (o.stop.aborted) return 'stopped';
    const p = await probe(o, transport);
    if (p.kind === 'closed') return 'closed';
    if (p.kind === 'absent' || p.identity.serial !== serial) return 'left';
  }
}

/** Sleeps, waking early (without throwing) when `signal` aborts. */
export async function pause(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return;
  await sleep(ms, undefined, { signal }).catch(() => undefined);
}
