/**
 * The station daemon in-process, against the real simulators over socat ptys and ser2net, a
 * real Redis journal and real SoftHSM keys. Devices are seeded straight into the journal
 * (test/helpers/seed.ts), so these tests do not depend on the batch pipeline.
 *
 * The never-falsely-verified rule is checked against ground truth: a device recorded verified
 * must hold exactly its bundle's credentials (read straight from the simulator), and its key
 * must be the certificate's.
 */
import 'reflect-metadata';
import { X509Certificate } from '@peculiar/x509';
import { UpdateCertificateCommand } from '@aws-sdk/client-iot';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { NordicModemModel, SerialV1Model, startSimulator, type Simulator } from '../../devices/index.js';
import type { ResolvedProfile } from '../../src/config/load.js';
import type { DriverName } from '../../src/config/schema.js';
import { openSeedWorld, seedBatch, type SeedWorld, type SeededDevice } from '../helpers/seed.js';
import { JournalStore, runStation, type StationEvent, type StationOptions } from '../../src/flash/index.js';
import { makeClients } from '../../src/cloud/clients.js';
import { Pacer } from '../../src/cloud/pacing.js';
import { registerCsr } from '../../src/jobs/registrar/index.js';
import { BulkSlot } from '../../src/jobs/slot.js';
import { removeHome, tempDir } from '../helpers/home.js';
import { startPtyPair, startSer2net } from '../helpers/pty.js';
import { Slot, pemAsWritten } from '../helpers/written.js';

const TIMING = { commandTimeoutMs: 250, keygenTimeoutMs: 5_000 };
const PROBE = { intervalMs: 40, timeoutMs: 150, reopenMs: 100 };
const SEC_TAG = 16842753;

let world: SeedWorld;
let home: string;
let dir: string;
let n = 0;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  home = tempDir('provline-station-');
  dir = mkdtempSync(join(tmpdir(), 'provline-station-pty-'));
  world = await openSeedWorld(home, { prefix: `station${process.pid}` });
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});
afterAll(async () => {
  await world?.close();
  await removeHome(home);
  rmSync(dir, { recursive: true, force: true });
});

const PROFILE_OF: Record<DriverName, string> = {
  'provline-serial-v1': 'mcu-wrapped',
  'nordic-at': 'nrf91-plain',
};

function serialFor(driver: DriverName): string {
  n++;
  return driver === 'nordic-at'
    ? `35266${process.pid % 1000}`.padEnd(10, '0') + String(n).padStart(5, '0')
    : `MCU-${process.pid}-${n}`;
}

/**
 * Seeds `count` registered devices of the driver's profile; returns them and the KEK. With
 * `connectable`, the stand-in issues their certificates and the batch names its MQTT endpoint.
 */
async function seed(
  driver: DriverName,
  count: number,
  profileName = PROFILE_OF[driver],
  { connectable = false } = {},
) {
  const profile = world.profile(profileName);
  const kek = await world.kek(profile);
  const serials = Array.from({ length: count }, () => serialFor(driver));
  const { devices } = await seedBatch({
    journal: world.journal,
    batches: world.batches,
    profile,
    batchId: `b-${process.pid}-${++n}`,
    serials,
    ca: world.ca,
    hsm: world.hsm,
    ...(connectable ? { register: world.standIn } : {}),
  });
  return { devices, kek, profile };
}

interface Rig {
  target: string;
  sim: Simulator;
  device: SeededDevice;
}

/** A simulator for `device` on a fresh pty pair (through ser2net when asked). */
async function rig(
  driver: DriverName,
  device: SeededDevice,
  kek: Buffer,
  options: { faults?: string; ser2net?: boolean; baudRate?: number } = {},
): Promise<Rig> {
  const name = `p${++n}`;
  const pair = await startPtyPair(dir, name);
  cleanups.push(() => pair.stop());
  const sim = await startSimulator({
    driver,
    port: pair.device,
    serial: device.serial,
    kek,
    ...(options.faults ? { faults: options.faults } : {}),
    ...(options.baudRate ? { baudRate: options.baudRate } : {}),
  });
  cleanups.push(() => sim.close());
  // An unplugged USB device takes its tty with it.
  void sim.host.unplugged.then(() => pair.stop());
  let target = pair.host;
  if (options.ser2net) {
    const bridge = await startSer2net(dir, name, pair.host);
    cleanups.push(() => bridge.stop());
    target = bridge.url;
  }
  return { target, sim, device };
}

/**
 * A station on `ports` until each has handled one device. Devices seeded with the local test CA
 * cannot connect anywhere, so the first connect is off unless a test asks for it.
 */
async function station(
  profileOrName: string | ResolvedProfile,
  ports: string[],
  { firstConnect = false, ...extra }: Partial<StationOptions> & { firstConnect?: boolean } = {},
) {
  const profile = typeof profileOrName === 'string' ? world.profile(profileOrName) : profileOrName;
  const events: StationEvent[] = [];
  const run = await runStation({
    stationId: 'test-line',
    profile: {
      name: profile.name,
      driver: profile.driver,
      driverSettings: profile.driverSettings,
      firstConnect,
    },
    ports,
    once: true,
    store: new JournalStore(world.stationJournal),
    keys: () => Promise.resolve(world.hsm),
    timing: TIMING,
    probe: PROBE,
    onEvent: (e) => events.push(e),
    ...extra,
  });
  return { ...run, events, byPort: (port: string) => run.results.find((r) => r.port === port)! };
}

/** Ground truth from the simulator: the bundle's credentials, and a key that is the certificate's. */
function holdsCredentials(r: Rig, rootCaPem = world.ca.rootCaPem): boolean {
  const { model } = r.sim;
  const cert = r.device.certificatePem!;
  if (model instanceof NordicModemModel) {
    const at = (type: number) => model.store.get(`${SEC_TAG},${type}`)?.content;
    const key = at(2);
    return (
      at(0) === pemAsWritten(rootCaPem) &&
      at(1) === pemAsWritten(cert) &&
      key !== undefined &&
      createPublicKey(createPrivateKey(key)).export({ type: 'spki', format: 'der' }).equals(r.device.spkiDer!)
    );
  }
  if (model instanceof SerialV1Model) {
    return (
      model.objects.get(Slot.ROOT_CA)?.toString() === pemAsWritten(rootCaPem) &&
      model.objects.get(Slot.CERTIFICATE)?.toString() === pemAsWritten(cert) &&
      model.key?.spkiDer.equals(r.device.spkiDer!) === true
    );
  }
  return false;
}

/** What the stand-in's reasons log holds for one client id (GET /_emulator/events). */
async function standInEvents(
  clientId: string,
): Promise<{ kind: string; reason: string; certificateId?: string }[]> {
  const res = await fetch(
    `${world.runtime.aws.endpoint}/_emulator/events?clientId=${encodeURIComponent(clientId)}`,
  );
  return ((await res.json()) as { events: { kind: string; reason: string; certificateId?: string }[] })
    .events;
}

function wroteNothing(r: Rig): boolean {
  const { model } = r.sim;
  if (model instanceof NordicModemModel) return model.store.size === 0;
  if (model instanceof SerialV1Model) return model.objects.size === 0 && model.key === undefined;
  return false;
}

describe('station', () => {
  it('four ports in parallel, both drivers, pty and ser2net: each device verified by its own answer and journalled', async () => {
    const v1 = await seed('provline-serial-v1', 2);
    const at = await seed('nordic-at', 2);
    const v1Rigs = await Promise.all(
      v1.devices.map((d, i) => rig('provline-serial-v1', d, v1.kek, { ser2net: i === 1 })),
    );
    const atRigs = await Promise.all(
      at.devices.map((d, i) => rig('nordic-at', d, at.kek, { ser2net: i === 1 })),
    );
    const [a, b] = await Promise.all([
      station(
        'mcu-wrapped',
        v1Rigs.map((r) => r.target),
      ),
      station(
        'nrf91-plain',
        atRigs.map((r) => r.target),
      ),
    ]);
    for (const [run, rigs] of [
      [a, v1Rigs],
      [b, atRigs],
    ] as const) {
      expect(run.portErrors).toEqual([]);
      for (const r of rigs) {
        const result = run.byPort(r.target);
        expect(result).toMatchObject({ serial: r.device.serial, outcome: 'verified', recorded: 'journal' });
        expect(holdsCredentials(r)).toBe(true);
        const rec = await world.journal.get(r.device.serial);
        expect(rec?.state).toBe('verified');
        expect(rec?.at.flashed).toBeLessThanOrEqual(rec!.at.verified!);
        expect(rec?.fields).toMatchObject({ stationId: 'test-line', port: r.target, rewritten: '1' });
        expect(Number(rec?.fields.flashMs)).toBeGreaterThan(0);
        expect(Number(rec?.fields.bytes)).toBeGreaterThan(1000);
        expect(rec?.fields.verifiedBy).toBe(
          r.sim.model instanceof SerialV1Model ? 'read-back+possession' : 'read-back',
        );
      }
    }
    // The live view got steps and progress from every port.
    const steps = new Set(a.events.flatMap((e) => (e.event === 'step' ? [e.step] : [])));
    expect([...steps]).toEqual(expect.arrayContaining(['lookup', 'verify', 'write', 'prove', 'record']));
    expect(a.events.some((e) => e.event === 'progress')).toBe(true);
    expect(a.events.at(-1)).toMatchObject({ event: 'summary', verified: 2, failed: 0 });
  });

  it('a device that already holds its credentials is done without a rewrite', async () => {
    const { devices, kek } = await seed('provline-serial-v1', 1);
    const r = await rig('provline-serial-v1', devices[0]!, kek);
    expect((await station('mcu-wrapped', [r.target])).byPort(r.target).outcome).toBe('verified');
    const first = await world.journal.get(r.device.serial);
    const stored = (r.sim.model as SerialV1Model).objects.get(Slot.CERTIFICATE);
    const commands = r.sim.host.stats.commands;

    const again = await station('mcu-wrapped', [r.target]);
    expect(again.byPort(r.target)).toMatchObject({ outcome: 'already', recorded: 'journal' });
    // HELLO, IDENTITY (the probe), HELLO, three READ_HASH, PROVE: nothing written.
    expect(r.sim.host.stats.commands - commands).toBe(7);
    expect((r.sim.model as SerialV1Model).objects.get(Slot.CERTIFICATE)).toBe(stored);
    const rec = await world.journal.get(r.device.serial);
    expect(rec?.state).toBe('verified');
    expect(rec?.at.verified).toBe(first?.at.verified);
  });

  it('refuses unknown, unregistered and other-profile devices and leaves them untouched', async () => {
    const kek = await world.kek(world.profile('mcu-wrapped'));
    const unknown = await rig('provline-serial-v1', { serial: 'NOT-IN-ANY-LOT', thingName: 'x' }, kek);
    // A batch still in the HSM stage (accepted: no certificate yet).
    const early = world.profile('mcu-wrapped');
    const { devices: pending } = await seedBatch({
      journal: world.journal,
      batches: world.batches,
      profile: early,
      batchId: `early-${process.pid}`,
      serials: [serialFor('provline-serial-v1')],
      ca: world.ca,
      until: 'accepted',
    });
    const unregistered = await rig('provline-serial-v1', pending[0]!, kek);
    // A registered device of the demo product, at an mcu-wrapped station.
    const demo = await seed('provline-serial-v1', 1, 'demo');
    const other = await rig('provline-serial-v1', demo.devices[0]!, demo.kek);

    const run = await station('mcu-wrapped', [unknown.target, unregistered.target, other.target]);
    expect(run.byPort(unknown.target)).toMatchObject({ outcome: 'refused', code: 'STATION_DEVICE_UNKNOWN' });
    expect(run.byPort(unregistered.target)).toMatchObject({
      outcome: 'refused',
      code: 'STATION_NOT_REGISTERED',
    });
    expect(run.byPort(other.target)).toMatchObject({ outcome: 'refused', code: 'STATION_WRONG_PROFILE' });
    expect(run.byPort(unknown.target).message).toMatch(
      /^Station test-line .*: device NOT-IN-ANY-LOT refused: /,
    );
    for (const r of [unknown, unregistered, other]) {
      expect(wroteNothing(r)).toBe(true);
      expect(r.sim.host.stats.commands).toBe(2); // HELLO and IDENTITY only
    }
    expect((await world.journal.get(pending[0]!.serial))?.state).toBe('accepted');
    expect((await world.journal.get(demo.devices[0]!.serial))?.state).toBe('registered');
  });

  // fault spec → outcome (and code) per driver; every device gets its own port, all at once.
  const FAULTS: [string, Record<DriverName, string>][] = [
    ['hang@identity', { 'nordic-at': 'verified', 'provline-serial-v1': 'verified' }],
    ['cme527', { 'nordic-at': 'verified', 'provline-serial-v1': 'verified' }],
    ['reject:*', { 'nordic-at': 'DEVICE_CERT_INVALID', 'provline-serial-v1': 'DEVICE_CERT_INVALID' }],
    ['hang@write', { 'nordic-at': 'verified', 'provline-serial-v1': 'verified' }],
    ['hang:*@write', { 'nordic-at': 'DEVICE_TIMEOUT', 'provline-serial-v1': 'DEVICE_TIMEOUT' }],
    ['drop@read', { 'nordic-at': 'verified', 'provline-serial-v1': 'verified' }],
    // The station reads back before it writes: a device whose every read answer is damaged
    // fails there, before anything is written.
    ['drop:*@read', { 'nordic-at': 'DEVICE_TIMEOUT', 'provline-serial-v1': 'DEVICE_TIMEOUT' }],
    ['corrupt@write', { 'nordic-at': 'verified', 'provline-serial-v1': 'verified' }],
    ['corrupt:*@write', { 'nordic-at': 'DEVICE_VERIFY_MISMATCH', 'provline-serial-v1': 'DEVICE_BAD_FRAME' }],
    ['unplug@write#2', { 'nordic-at': 'DEVICE_DISCONNECTED', 'provline-serial-v1': 'DEVICE_DISCONNECTED' }],
    ['drop@pop', { 'nordic-at': 'verified', 'provline-serial-v1': 'verified' }],
    ['hang:*@pop', { 'nordic-at': 'verified', 'provline-serial-v1': 'DEVICE_TIMEOUT' }],
  ];
  it.each(['provline-serial-v1', 'nordic-at'] as const)(
    '%s: every injected fault ends verified after a retry or failed with its code, never falsely verified',
    async (driver) => {
      const { devices, kek } = await seed(driver, FAULTS.length);
      const rigs = await Promise.all(
        FAULTS.map(([spec], i) => rig(driver, devices[i]!, kek, { faults: spec })),
      );
      const run = await station(
        PROFILE_OF[driver],
        rigs.map((r) => r.target),
      );
      expect(run.portErrors).toEqual([]);
      const got = await Promise.all(
        rigs.map(async (r, i) => {
          const result = run.byPort(r.target);
          const rec = await world.journal.get(r.device.serial);
          const [spec, outcomes] = FAULTS[i]!;
          const expected = outcomes[driver];
          // nRF91 modems have no proof of possession: their pop faults never fire.
          if (!(driver === 'nordic-at' && spec.endsWith('@pop')))
            expect(r.sim.host.faults.fired.length).toBeGreaterThan(0);
          // Never verified in the journal unless the device really holds its credentials.
          if (rec?.state === 'verified') expect(holdsCredentials(r)).toBe(true);
          if (expected === 'verified') expect(rec?.state).toBe('verified');
          else expect(rec).toMatchObject({ state: 'failed', error: { code: expected, stage: 'flash' } });
          return [spec, result.outcome === 'verified' ? 'verified' : result.code];
        }),
      );
      expect(Object.fromEntries(got)).toEqual(Object.fromEntries(FAULTS.map(([s, e]) => [s, e[driver]])));
    },
  );

  it('as a daemon: waits for each device, handles it, waits for it to leave, takes the next; stops cleanly', async () => {
    const { devices, kek } = await seed('provline-serial-v1', 2);
    const pair = await startPtyPair(dir, `daemon${++n}`);
    cleanups.push(() => pair.stop());
    const stop = new AbortController();
    const events: StationEvent[] = [];
    let wake: (() => void) | undefined;
    const profile = world.profile('mcu-wrapped');
    const running = runStation({
      stationId: 'daemon',
      profile: {
        name: profile.name,
        driver: profile.driver,
        driverSettings: profile.driverSettings,
        firstConnect: false,
      },
      ports: [pair.host],
      store: new JournalStore(world.stationJournal),
      timing: TIMING,
      probe: PROBE,
      stop: stop.signal,
      onEvent: (e) => {
        events.push(e);
        wake?.();
      },
    });
    const until = (pred: (e: StationEvent) => boolean): Promise<void> =>
      new Promise((resolve) => {
        wake = () => {
          if (events.some(pred)) resolve();
        };
        wake();
      });
    for (const d of devices) {
      const sim = await startSimulator({
        driver: 'provline-serial-v1',
        port: pair.device,
        serial: d.serial,
        kek,
      });
      await until((e) => e.event === 'result' && e.serial === d.serial);
      await sim.close(); // the device leaves
      await until((e) => e.event === 'left' && e.serial === d.serial);
    }
    stop.abort();
    const run = await running;
    expect(run.results.map((r) => [r.serial, r.outcome])).toEqual(devices.map((d) => [d.serial, 'verified']));
    expect(run.summary).toMatchObject({ verified: 2, failed: 0, abandoned: 0 });
    for (const d of devices) expect((await world.journal.get(d.serial))?.state).toBe('verified');
  });

  it('abandons a write in flight when aborted: nothing recorded as done, the device is started over next time', async () => {
    const { devices, kek } = await seed('provline-serial-v1', 1);
    const r = await rig('provline-serial-v1', devices[0]!, kek, { baudRate: 19_200 });
    const abort = new AbortController();
    const run = await station('mcu-wrapped', [r.target], {
      abort: abort.signal,
      timing: undefined,
      onEvent: (e) => {
        if (e.event === 'progress' && e.bytesSent > 0) abort.abort();
      },
    });
    expect(run.byPort(r.target)).toMatchObject({ outcome: 'abandoned', recorded: 'none', code: 'ABORTED' });
    expect((await world.journal.get(r.device.serial))?.state).toBe('registered');
    expect(holdsCredentials(r)).toBe(false);
    // The next visit writes it properly.
    const again = await station('mcu-wrapped', [r.target], { timing: undefined });
    expect(again.byPort(r.target).outcome).toBe('verified');
    expect(holdsCredentials(r)).toBe(true);
  });

  it('device-generated keys: keygen on the device, RegisterThing through the registrar, certificate written back, verified', async () => {
    const store = new JournalStore(world.stationJournal, (req) =>
      registerCsr(
        {
          journal: world.journal,
          batches: world.batches,
          cloud: makeClients(world.runtime.aws),
          slot: new BulkSlot(world.redis, world.journal.keys),
          pacer: new Pacer({ perSecond: 50, burst: 5 }),
          owner: 'station-test',
          now: Date.now,
          settings: { flushMs: 100, registrationRounds: 3, rootCaFile: world.runtime.aws.rootCaFile },
        },
        req,
      ),
    );
    // The shipped nRF91 profile, and the same product idea for serial-v1 firmware (which can
    // also prove possession of its new key).
    const nrf = world.profile('nrf91-device');
    const mcuDevice = { ...world.profile('mcu-wrapped'), name: 'mcu-device', keyDelivery: 'device' as const };
    mcuDevice.registration = { ...mcuDevice.registration, mode: 'single' };
    const lots = await Promise.all(
      [
        [nrf, 'nordic-at', 2],
        [mcuDevice, 'provline-serial-v1', 1],
      ].map(async ([profile, driver, count]) => {
        const p = profile as typeof nrf;
        const d = driver as DriverName;
        const serials = Array.from({ length: count as number }, () => serialFor(d));
        const { devices } = await seedBatch({
          journal: world.journal,
          batches: world.batches,
          profile: p,
          batchId: `dev-${++n}`,
          serials,
          ca: world.ca,
        });
        const rigs = await Promise.all(devices.map((dv) => rig(d, dv, Buffer.alloc(32, 1))));
        return { p, rigs };
      }),
    );
    for (const { rigs } of lots)
      for (const r of rigs) expect((await world.journal.get(r.device.serial))?.state).toBe('accepted');
    // Registered with the stand-in by RegisterThing: the devices can make their first connect.
    const runs = await Promise.all(
      lots.map(({ p, rigs }) =>
        station(
          p,
          rigs.map((r) => r.target),
          { store, firstConnect: true },
        ),
      ),
    );
    const rootCa = readFileSync(world.runtime.aws.rootCaFile, 'utf8');
    for (const [i, { rigs }] of lots.entries()) {
      for (const r of rigs) {
        const res = runs[i]!.byPort(r.target);
        expect(res, res.message).toMatchObject({ outcome: 'verified', recorded: 'journal', connected: true });
        const rec = await world.journal.get(r.device.serial);
        expect(rec).toMatchObject({ state: 'connected', fields: { keySource: 'device' } });
        // On a loaded machine a first attempt can time out and be retried; the count is the
        // device's own, and the stand-in saw the accepted connect with the issued certificate.
        expect(Number(rec!.fields.connectAttempts)).toBeGreaterThanOrEqual(1);
        const seen = await standInEvents(r.device.thingName);
        expect(seen.find((e) => e.kind === 'connect.accepted')?.certificateId).toBe(
          rec!.fields.certificateId,
        );
        // The certificate AWS issued is on the device, over the key the device generated.
        const cert = new X509Certificate(rec!.fields.certificatePem!);
        const certSpki = Buffer.from(cert.publicKey.rawData);
        const { model } = r.sim;
        if (model instanceof NordicModemModel) {
          expect(model.store.get(`${SEC_TAG},1`)?.content).toBe(pemAsWritten(rec!.fields.certificatePem!));
          expect(model.store.get(`${SEC_TAG},0`)?.content).toBe(pemAsWritten(rootCa));
          const key = createPrivateKey(model.store.get(`${SEC_TAG},2`)!.content);
          expect(createPublicKey(key).export({ type: 'spki', format: 'der' }).equals(certSpki)).toBe(true);
        } else if (model instanceof SerialV1Model) {
          expect(model.key?.spkiDer.equals(certSpki)).toBe(true);
          expect(rec!.fields.verifiedBy).toBe('read-back+possession');
        }
      }
    }
    // Back at the station: already provisioned, no second key.
    const { p, rigs } = lots[0]!;
    const before = (rigs[0]!.sim.model as NordicModemModel).store.get(`${SEC_TAG},2`);
    const again = await station(p, [rigs[0]!.target], { store, firstConnect: true });
    expect(again.byPort(rigs[0]!.target)).toMatchObject({ outcome: 'already', connected: true });
    expect((await world.journal.get(rigs[0]!.device.serial))?.state).toBe('connected');
    expect((rigs[0]!.sim.model as NordicModemModel).store.get(`${SEC_TAG},2`)).toBe(before);
  });

  it.each(['provline-serial-v1', 'nordic-at'] as const)(
    '%s: after verified, the device connects to the stand-in as its thing and the journal says connected',
    async (driver) => {
      const { devices, kek } = await seed(driver, 1, PROFILE_OF[driver], { connectable: true });
      const r = await rig(driver, devices[0]!, kek);
      const run = await station(PROFILE_OF[driver], [r.target], { firstConnect: true });
      const result = run.byPort(r.target);
      expect(result, result.message).toMatchObject({
        outcome: 'verified',
        connected: true,
        connectAttempts: 1,
        recorded: 'journal',
      });
      expect(result.message).toContain(`connected to ${world.standIn.mqttEndpoint} as its thing`);
      const rec = await world.journal.get(r.device.serial);
      expect(rec).toMatchObject({
        state: 'connected',
        fields: { connectAttempts: '1', endpoint: world.standIn.mqttEndpoint, clientId: r.device.thingName },
      });
      expect(rec!.at.verified).toBeLessThanOrEqual(rec!.at.connected!);
      // The live view saw the step, and the stand-in saw the thing connect with its certificate.
      expect(run.events.some((e) => e.event === 'step' && e.step === 'connect')).toBe(true);
      expect(run.events.at(-1)).toMatchObject({ event: 'summary', verified: 1, connected: 1 });
      const seen = await standInEvents(r.device.thingName);
      expect(seen.find((e) => e.kind === 'connect.accepted')?.certificateId).toBe(rec!.fields.certificateId);
    },
  );

  it('a certificate made INACTIVE before the visit: the device reports the hang-up, ends failed with DEVICE_CONNECT_FAILED, and connects on its next visit once ACTIVE', async () => {
    const { devices, kek } = await seed('provline-serial-v1', 1, 'mcu-wrapped', { connectable: true });
    const r = await rig('provline-serial-v1', devices[0]!, kek);
    const { certificateId } = (await world.journal.get(r.device.serial))!.fields;
    await world.standIn.cloud.iot.send(
      new UpdateCertificateCommand({ certificateId, newStatus: 'INACTIVE' }),
    );

    const run = await station('mcu-wrapped', [r.target], { firstConnect: true });
    const result = run.byPort(r.target);
    expect(result).toMatchObject({ outcome: 'failed', code: 'DEVICE_CONNECT_FAILED', recorded: 'journal' });
    expect(result.message).toContain('closed without CONNACK');
    expect(result.connected).toBeUndefined();
    // The device holds its credentials (it was verified); the journal says why it failed.
    expect(holdsCredentials(r, world.standIn.rootCaPem)).toBe(true);
    const rec = await world.journal.get(r.device.serial);
    expect(rec).toMatchObject({
      state: 'failed',
      error: { code: 'DEVICE_CONNECT_FAILED', stage: 'connect' },
    });
    expect(rec!.at.verified).toBeDefined();
    // AWS says nothing to the device; the stand-in's events log says why, for each attempt.
    const refused = (await standInEvents(r.device.thingName)).filter((e) => e.kind === 'connect.refused');
    expect(refused.length).toBe(3);
    expect(refused.every((e) => e.certificateId === certificateId && e.reason.includes('INACTIVE'))).toBe(
      true,
    );

    // Activated, and the device presented again: verified again without a rewrite, then connected.
    await world.standIn.cloud.iot.send(new UpdateCertificateCommand({ certificateId, newStatus: 'ACTIVE' }));
    const again = await station('mcu-wrapped', [r.target], { firstConnect: true });
    expect(again.byPort(r.target)).toMatchObject({ outcome: 'already', connected: true });
    const after = await world.journal.get(r.device.serial);
    expect(after?.state).toBe('connected');
    expect(after?.error).toBeUndefined();
  });

  it('a profile with station.firstConnect false stops at verified and never asks the device to connect', async () => {
    const { devices, kek } = await seed('nordic-at', 1, 'nrf91-plain', { connectable: true });
    const r = await rig('nordic-at', devices[0]!, kek);
    const run = await station('nrf91-plain', [r.target], { firstConnect: false });
    expect(run.byPort(r.target)).toMatchObject({ outcome: 'verified' });
    expect(run.byPort(r.target).connected).toBeUndefined();
    expect((await world.journal.get(r.device.serial))?.state).toBe('verified');
    expect((r.sim.model as NordicModemModel).cfun).toBe(4); // never brought online
    expect(await standInEvents(r.device.thingName)).toEqual([]);
  });
});
