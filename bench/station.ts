/**
 * Station benchmark: the whole per-device visit (identity, journal lookup, HSM unwrap for plain
 * delivery, verify first, write, read-back, proof of possession, two journal transitions) on N
 * ports at a real UART rate, against the line-rate limit: the bytes that had to cross the wire
 * for that device (both directions, counted by the simulator) ÷ baud/10 bytes per second. Also
 * the speed-up of N ports over 1. Real Redis and SoftHSM from a scratch stack; devices seeded
 * straight into the journal. Prints one JSON object.
 *
 *   node dist/bench/station.js [--ports 4] [--baud 115200] [--rounds 3]
 *                              [--driver all|provline-serial-v1|nordic-at]
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSimulator, type Simulator, type SimulatorRequest } from '../devices/index.js';
import type { DriverName } from '../src/config/index.js';
import { stopPid, waitFor } from '../src/core/index.js';
import { JournalStore, runStation } from '../src/flash/index.js';
import { stackDown } from '../src/stack/index.js';
import { openSeedWorld, seedBatch, type SeedWorld } from '../test/helpers/seed.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : fallback;
}

const PROFILE: Record<DriverName, string> = {
  'provline-serial-v1': 'mcu-wrapped',
  'nordic-at': 'nrf91-plain',
};
const GOALS = { ofLineRate: 0.9, speedUp: 3.6 };

interface DeviceTiming {
  ms: number;
  wireBytes: number;
  limitMs: number;
}

let seq = 0;

interface RemoteSim {
  /** Stops the device; resolves with its byte counts (idempotent). */
  close(): Promise<{ bytesIn: number; bytesOut: number }>;
}

interface DeviceMessage {
  type: 'start' | 'stop' | 'ready' | 'stopped';
  id: number;
  req?: SimulatorRequest;
  bytesIn?: number;
  bytesOut?: number;
  error?: string;
}

/**
 * The simulated devices live in a process of their own, as real devices are separate hardware:
 * the station's process does only the station's work (serialport cannot run in a worker
 * thread). One long-lived process, so the simulators' code is as warm as a device's firmware
 * after the warm-up round.
 */
class DeviceHost {
  private readonly worker: ChildProcess = fork(fileURLToPath(import.meta.url), ['--serve-devices'], {
    serialization: 'advanced',
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  private readonly waiting = new Map<string, (m: DeviceMessage) => void>();
  private next = 0;

  constructor() {
    this.worker.on('message', (m: DeviceMessage) => {
      const key = `${m.type}:${m.id}`;
      this.waiting.get(key)?.(m);
      this.waiting.delete(key);
    });
  }

  private call(m: DeviceMessage, reply: 'ready' | 'stopped'): Promise<DeviceMessage> {
    return new Promise((resolve, reject) => {
      this.waiting.set(`${reply}:${m.id}`, (r) => (r.error ? reject(new Error(r.error)) : resolve(r)));
      this.worker.send(m);
    });
  }

  async start(req: SimulatorRequest): Promise<RemoteSim> {
    const id = ++this.next;
    await this.call({ type: 'start', id, req }, 'ready');
    let stopped: Promise<{ bytesIn: number; bytesOut: number }> | undefined;
    return {
      close: () =>
        (stopped ??= this.call({ type: 'stop', id }, 'stopped').then((m) => ({
          bytesIn: m.bytesIn ?? 0,
          bytesOut: m.bytesOut ?? 0,
        }))),
    };
  }

  terminate(): void {
    this.worker.kill('SIGKILL');
  }
}

/** The worker side: starts and stops simulators on request. */
function serveDevices(): void {
  const sims = new Map<number, Simulator>();
  process.on('message', (m: DeviceMessage) => {
    const reply = (r: DeviceMessage): void => void process.send?.(r);
    if (m.type === 'start' && m.req)
      startSimulator({ ...m.req, ...(m.req.kek ? { kek: Buffer.from(m.req.kek) } : {}) }).then(
        (sim) => {
          sims.set(m.id, sim);
          reply({ type: 'ready', id: m.id });
        },
        (e: unknown) => reply({ type: 'ready', id: m.id, error: String(e) }),
      );
    else if (m.type === 'stop') {
      const sim = sims.get(m.id);
      sims.delete(m.id);
      void (sim?.close() ?? Promise.resolve()).then(() =>
        reply({ type: 'stopped', id: m.id, ...(sim ? sim.host.stats : {}) }),
      );
    }
  });
}

let devices_: DeviceHost;

/** One station run: `ports` devices, one per port, all at once. */
async function round(world: SeedWorld, dir: string, driver: DriverName, ports: number, baud: number) {
  const profile = world.profile(PROFILE[driver]);
  const kek = await world.kek(profile);
  const r = ++seq;
  const serials = Array.from({ length: ports }, (_, i) =>
    driver === 'nordic-at' ? `3526561${String(r * 100 + i).padStart(8, '0')}` : `BENCH-${r}-${i}`,
  );
  const { devices } = await seedBatch({
    journal: world.journal,
    batches: world.batches,
    profile,
    batchId: `bench-${r}`,
    serials,
    ca: world.ca,
    hsm: world.hsm,
  });
  const socats: number[] = [];
  const sims: RemoteSim[] = [];
  try {
    const hosts: string[] = [];
    for (const [i, d] of devices.entries()) {
      const dev = join(dir, `r${r}p${i}-dev`);
      const host = join(dir, `r${r}p${i}-host`);
      const socat = spawn('setsid', ['socat', `pty,raw,echo=0,link=${dev}`, `pty,raw,echo=0,link=${host}`], {
        stdio: 'ignore',
      });
      socat.unref();
      if (socat.pid) socats.push(socat.pid);
      await waitFor('socat', () => existsSync(dev) && existsSync(host), 5_000, 10);
      sims.push(await devices_.start({ driver, port: dev, serial: d.serial, baudRate: baud, kek }));
      hosts.push(host);
    }
    const run = await runStation({
      stationId: 'bench',
      // The line rate of flashing is measured: seeded devices have no endpoint to connect to.
      profile: {
        name: profile.name,
        driver: profile.driver,
        driverSettings: profile.driverSettings,
        firstConnect: false,
      },
      ports: hosts,
      once: true,
      baudRate: baud,
      store: new JournalStore(world.stationJournal),
      keys: () => Promise.resolve(world.hsm),
    });
    const stats = await Promise.all(sims.map((s) => s.close()));
    return hosts.map((host, i): DeviceTiming => {
      const result = run.results.find((x) => x.port === host);
      if (result?.outcome !== 'verified') throw new Error(`${host}: ${result?.message ?? 'no result'}`);
      const wireBytes = stats[i]!.bytesIn + stats[i]!.bytesOut;
      return { ms: result.ms, wireBytes, limitMs: (wireBytes / (baud / 10)) * 1000 };
    });
  } finally {
    for (const s of sims) await s.close();
    for (const pid of socats) await stopPid(pid, 'socat', 2_000);
  }
}

function perDevice(timings: DeviceTiming[]): Record<string, number> {
  const mean = (f: (t: DeviceTiming) => number): number =>
    timings.reduce((a, t) => a + f(t), 0) / timings.length;
  const ms = mean((t) => t.ms);
  const limit = mean((t) => t.limitMs);
  return {
    ms: Math.round(ms),
    wireBytes: Math.round(mean((t) => t.wireBytes)),
    lineRateLimitMs: Math.round(limit),
    ofLineRate: Number((limit / ms).toFixed(3)),
  };
}

async function main(): Promise<void> {
  const ports = Number(arg('ports', '4'));
  const baud = Number(arg('baud', '115200'));
  const rounds = Number(arg('rounds', '3'));
  const which = arg('driver', 'all');
  const drivers = (which === 'all' ? ['provline-serial-v1', 'nordic-at'] : [which]) as DriverName[];
  const home = mkdtempSync(join(tmpdir(), 'provline-bench-station-'));
  const dir = mkdtempSync(join(tmpdir(), 'provline-bench-station-pty-'));
  const out: Record<string, unknown> = {
    baud,
    lineRateBytesPerSecond: baud / 10,
    ports,
    rounds,
    goals: GOALS,
  };
  let world: SeedWorld | undefined;
  devices_ = new DeviceHost();
  try {
    world = await openSeedWorld(home, { prefix: 'bench' });
    for (const driver of drivers) {
      await round(world, dir, driver, 1, baud); // warm-up
      const one: DeviceTiming[] = [];
      const many: DeviceTiming[][] = [];
      for (let i = 0; i < rounds; i++) {
        one.push(...(await round(world, dir, driver, 1, baud)));
        many.push(await round(world, dir, driver, ports, baud));
      }
      const onePort = perDevice(one);
      const nPorts = perDevice(many.flat());
      // Devices per unit of time with N ports over 1 port: N × t(1) ÷ the slowest of the N.
      const slowest = many.reduce((a, r) => a + Math.max(...r.map((t) => t.ms)), 0) / many.length;
      const speedUp = Number(((ports * (onePort.ms ?? 0)) / slowest).toFixed(2));
      out[driver] = {
        profile: PROFILE[driver],
        onePort,
        [`${ports}Ports`]: nPorts,
        speedUp,
        meetsGoals:
          (onePort.ofLineRate ?? 0) >= GOALS.ofLineRate &&
          (nPorts.ofLineRate ?? 0) >= GOALS.ofLineRate &&
          speedUp >= GOALS.speedUp,
      };
    }
  } finally {
    devices_.terminate();
    await world?.close();
    await stackDown(home);
    rmSync(home, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
}

if (process.argv.includes('--serve-devices')) serveDevices();
else
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`bench station: ${String(e)}\n`);
      process.exit(1);
    },
  );
