/**
 * A simulated factory line on the local stack, shared by `provline demo` and `provline
 * rehearse`: the keys a product's devices and the HSM must share before the station (by what
 * the profile's strategy puts in the bundle), a station per product over socat pty pairs,
 * simulated devices of the product's driver plugged in one after another on each port, and
 * the stand-in's events log asked whether each device that reported its first connect was seen
 * connecting as its thing.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RegisterCsr } from '../../batch/index.js';
import { strategyFor } from '../../batch/strategies/index.js';
import type { ResolvedProfile } from '../../config/index.js';
import { caModule as cloudCa, makeClients, requireRoleArn } from '../../cloud/index.js';
import { ProvlineError, isProvlineError } from '../../core/index.js';
import {
  JournalStore,
  runStation,
  type DeviceResult,
  type PtyPair,
  type StationEvent,
} from '../../flash/index.js';
import { caModule as hsmCa } from '../../hsm/index.js';
import type { Hsm } from '../../hsm/index.js';
import { ClaimStore, stationJournal } from '../../jobs/index.js';
import type { CommandContext } from '../context.js';
import type { SimulatedDevices } from '../entries.js';
import type { PipelineHandles } from './open.js';

/** One product on the line: a profile, its devices and the ports its station runs. */
export interface ProductLine {
  profile: ResolvedProfile;
  serials: string[];
  ports: PtyPair[];
  /** The transport KEK the simulated devices hold (wrapped key delivery). */
  kek?: Buffer;
  /** The station's registration, for strategies whose certificate the station obtains. */
  register?: RegisterCsr;
  /** serial → fault spec planted in that serial's simulated device (docs/device-protocol.md). */
  faults?: ReadonlyMap<string, string>;
}

export interface LineOptions {
  stationId: string;
  /** Where the simulated devices come from (the CLI's entry points: workers/devices.ts). */
  devices: SimulatedDevices;
  /** Pace the simulated devices at 115200 baud. */
  realLineRate?: boolean;
  /** The stand-in's control-plane endpoint, for its events log; null: not asked. */
  iotEndpoint: string | null;
  /** Each device's result as it comes. */
  onResult?: (r: DeviceResult) => void;
  /** How long one device may take at its port before the next is plugged in. */
  deviceBudgetMs?: number;
  /** Stops plugging devices in and abandons visits in progress (Ctrl-C). */
  signal?: AbortSignal;
}

export interface LineRun {
  results: DeviceResult[];
  /** serial → thing name, for devices the stand-in saw connect as their thing. */
  seen: Map<string, string>;
}

/**
 * Makes the keys the product's devices and the HSM share, by what the strategy's bundle
 * carries: a wrapped key needs a KEK the simulated devices hold too (imported into the HSM,
 * its value kept 0600 in `kekFile`, as a device maker would hold it); a plain key needs a KEK
 * in the HSM only; a strategy whose devices make their own keys needs none.
 */
export async function prepareProductKeys(
  hsm: Hsm,
  profile: ResolvedProfile,
  kekFile: string,
): Promise<Buffer | undefined> {
  switch (strategyFor(profile).bundleKey(profile.keyDelivery)) {
    case 'wrapped':
      return sharedKek(hsm, profile.kekLabel, kekFile);
    case 'plain':
      if (!(await hsm.findKek(profile.kekLabel))) await hsm.createKek({ label: profile.kekLabel });
      return undefined;
    case 'none':
      return undefined;
  }
}

/**
 * A transport KEK both the HSM and the simulated devices hold: a random AES-256 key imported
 * into the HSM, with its raw value kept (0600) where the simulators read it. A production KEK
 * is created in the HSM or agreed with the device maker out of band.
 */
export async function sharedKek(hsm: Hsm, label: string, file: string): Promise<Buffer> {
  const existing = await hsm.findKek(label);
  if (existing && existsSync(file)) return readFileSync(file);
  if (existing) {
    throw new ProvlineError(
      'DEMO_FAILED',
      `the HSM holds a KEK "${label}" whose value the simulated devices do not have (${file} is missing)`,
      {
        hint: 'Remove the home (or its hsm/ directory) and run again.',
      },
    );
  }
  const value = existsSync(file) ? readFileSync(file) : randomBytes(32);
  writeFileSync(file, value, { mode: 0o600 });
  await hsm.importKek({ label, value });
  return value;
}

/**
 * The factory CA of a jitp or jitr profile, made in the HSM and registered with the stand-in
 * (idempotent): with the profile's template for JITP, without one for JITR (a CA with a
 * template provisions by JITP and the activator would never see its devices). What
 * `provline ca create` and `ca register [--template-body]` do by hand.
 */
export async function prepareFactoryCa(
  c: CommandContext,
  hsm: Hsm,
  profile: ResolvedProfile,
): Promise<cloudCa.CaDescription> {
  const settings = profile.ca!;
  const now = new Date();
  const exists = await hsmCa.describeCa(hsm, settings, now).then(
    () => true,
    (e: unknown) => {
      if (isProvlineError(e) && e.code === 'CA_KEY_NOT_FOUND') return false;
      throw e;
    },
  );
  if (!exists) await hsmCa.createCa(hsm, { settings, now, csr: false });
  const view = await hsmCa.describeCa(hsm, settings, now);
  const cloud = makeClients(c.runtime.aws);
  try {
    return await cloudCa.registerCa(cloud, {
      caCertificatePem: view.certificatePem,
      mode: 'DEFAULT',
      verificationCertificate: (registrationCode) =>
        hsmCa.signVerificationCertificate(hsm, { ca: settings, registrationCode, now: new Date() }),
      ...(strategyFor(profile).certificate.call === 'jit-template'
        ? {
            registrationConfig: {
              templateBody: readFileSync(profile.templatePath, 'utf8'),
              roleArn: requireRoleArn(c.runtime.aws),
            },
          }
        : {}),
    });
  } finally {
    cloud.destroy();
  }
}

/**
 * Runs one station per product over its ports, and on each port plugs the product's devices
 * in one after another: a simulator attaches to the device end, the station finds it, flashes
 * and verifies it, then the device is unplugged and the next one comes.
 */
export async function runProductLines(
  p: PipelineHandles,
  lines: readonly ProductLine[],
  hsm: Hsm | undefined,
  opts: LineOptions,
): Promise<LineRun> {
  const results: DeviceResult[] = [];
  const seen = new Map<string, string>();
  const checks: Promise<void>[] = [];
  const waiting = new Map<string, (r: DeviceResult) => void>();
  const onEvent = (e: StationEvent): void => {
    if (e.event !== 'result') return;
    results.push(e);
    opts.onResult?.(e);
    // Asked as each device connects, while its entries are surely in the log's window.
    if (e.connected && opts.iotEndpoint)
      checks.push(seenConnecting(p, opts.iotEndpoint, e.serial, seen).catch(() => undefined));
    waiting.get(e.serial)?.(e);
  };
  const stop = new AbortController();
  // A claim lot's bundle names the product's claim (its record in Redis).
  const claims = new ClaimStore(p.redis, p.prefix);
  const stations = lines.map((line) =>
    runStation({
      stationId: opts.stationId,
      profile: {
        name: line.profile.name,
        driver: line.profile.driver,
        driverSettings: line.profile.driverSettings,
        ...(line.profile.station.firstConnect !== undefined
          ? { firstConnect: line.profile.station.firstConnect }
          : {}),
      },
      ports: line.ports.map((x) => x.host),
      store: new JournalStore(
        stationJournal(p.journal, p.batches, (name) => claims.view(name)),
        line.register,
      ),
      ...(hsm ? { keys: () => Promise.resolve(hsm) } : {}),
      stop: stop.signal,
      ...(opts.signal ? { abort: opts.signal } : {}),
      onEvent,
    }),
  );
  const budget = opts.deviceBudgetMs ?? 120_000;
  const plugIn = async (line: ProductLine, port: PtyPair, serials: string[]): Promise<void> => {
    for (const serial of serials) {
      if (opts.signal?.aborted) return;
      const done = new Promise<DeviceResult>((resolve) => waiting.set(serial, resolve));
      const sim = await opts.devices.start({
        driver: line.profile.driver,
        port: port.device,
        serial,
        ...(line.kek ? { kek: line.kek } : {}),
        ...(line.faults?.has(serial) ? { faults: line.faults.get(serial)! } : {}),
        ...(opts.realLineRate ? { baudRate: 115_200 } : {}),
      });
      const timer = new AbortController();
      const gaveUp = sleep(budget, undefined, {
        signal: AbortSignal.any([timer.signal, ...(opts.signal ? [opts.signal] : [])]),
      }).catch(() => undefined);
      await Promise.race([done, gaveUp]);
      timer.abort();
      waiting.delete(serial);
      await sim.close(); // unplugged
      await sleep(50);
    }
  };
  try {
    await Promise.all(
      lines.flatMap((line) =>
        line.ports.map((port, i) =>
          plugIn(
            line,
            port,
            line.serials.filter((_, j) => j % line.ports.length === i),
          ),
        ),
      ),
    );
  } finally {
    stop.abort();
    await Promise.all(stations);
  }
  await Promise.all(checks);
  return { results, seen };
}

/**
 * Whether the stand-in saw the device connect as its thing: a `connect.accepted` entry for the
 * thing name in its events log (GET /_emulator/events, the local stack only), noted in `seen`
 * (serial → thing name). The station's word (the device's own CONNACK 0) is checked against the
 * other end of the connection.
 */
async function seenConnecting(
  p: PipelineHandles,
  iotEndpoint: string,
  serial: string,
  seen: Map<string, string>,
): Promise<void> {
  const rec = await p.journal.get(serial);
  if (!rec) return;
  const res = await fetch(`${iotEndpoint}/_emulator/events?clientId=${encodeURIComponent(rec.thingName)}`);
  if (!res.ok) return;
  const { events } = (await res.json()) as { events: { kind: string }[] };
  if (events.some((e) => e.kind === 'connect.accepted')) seen.set(serial, rec.thingName);
}
