/**
 * `provline station` as its own process: --once over two ports with each driver (the HSM opened
 * by the CLI for plain delivery), SIGTERM in the middle of a write (abandoned, or finished
 * within the grace period), and the offline path: prefetch, a station whose Redis is
 * unreachable, and sync.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startSimulator, type Simulator } from '../../devices/index.js';
import { VISIT_LINES_MAX, type VisitLog } from '../../src/batch/journal.js';
import type { DriverName } from '../../src/config/schema.js';
import { freePort, waitFor } from '../../src/core/proc.js';
import { openSeedWorld, seedBatch, type SeedWorld, type SeededDevice } from '../helpers/seed.js';
import { BIN, runCli } from '../helpers/cli.js';
import { removeHome, tempDir } from '../helpers/home.js';
import { startPtyPair, startSer2net } from '../helpers/pty.js';

let world: SeedWorld;
let home: string;
let dir: string;
let n = 0;
const cleanups: (() => Promise<void>)[] = [];
const children: ChildProcess[] = [];

beforeAll(async () => {
  home = tempDir('provline-station-cli-');
  dir = mkdtempSync(join(tmpdir(), 'provline-station-cli-pty-'));
  world = await openSeedWorld(home);
});
afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});
afterAll(async () => {
  await world?.close();
  await removeHome(home);
  rmSync(dir, { recursive: true, force: true });
});

// The stack's token is found from PROVLINE_HOME; SOFTHSM2_CONF (set in this process by the
// seeding HSM session) would make the CLI treat it as a user-configured token without a PIN.
const env = (): NodeJS.ProcessEnv => ({ PROVLINE_HOME: home, SOFTHSM2_CONF: undefined });

async function seed(profileName: string, count: number) {
  const profile = world.profile(profileName);
  const kek = await world.kek(profile);
  const serials = Array.from({ length: count }, () =>
    profile.driver === 'nordic-at' ? `3526570000${String(++n).padStart(5, '0')}` : `CLI-${++n}`,
  );
  const { devices } = await seedBatch({
    journal: world.journal,
    batches: world.batches,
    profile,
    batchId: `cli-${++n}`,
    serials,
    ca: world.ca,
    hsm: world.hsm,
    // Certificates from the stand-in, so the devices make their first connect for real.
    register: world.standIn,
  });
  return { devices, kek, driver: profile.driver, batchId: `cli-${n}`, profile: profileName };
}

async function rig(
  driver: DriverName,
  device: SeededDevice,
  kek: Buffer,
  options: { baudRate?: number; ser2net?: boolean } = {},
): Promise<{ target: string; sim: Simulator }> {
  const name = `c${++n}`;
  const pair = await startPtyPair(dir, name);
  cleanups.push(() => pair.stop());
  const sim = await startSimulator({ driver, port: pair.device, serial: device.serial, kek, ...options });
  cleanups.push(() => sim.close());
  if (!options.ser2net) return { target: pair.host, sim };
  const bridge = await startSer2net(dir, name, pair.host);
  cleanups.push(() => bridge.stop());
  return { target: bridge.url, sim };
}

const ports = (targets: string[]): string[] => targets.flatMap((t) => ['--port', t]);
const lines = (stdout: string): Record<string, unknown>[] =>
  stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);

/** A long-running station whose JSON events are collected as they come. */
function spawnStation(args: string[], extraEnv: NodeJS.ProcessEnv = {}) {
  const child = spawn(process.execPath, [BIN, 'station', '--json', ...args], {
    env: { ...process.env, PROVLINE_LOG_LEVEL: 'warn', ...env(), ...extraEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const events: Record<string, unknown>[] = [];
  let buf = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      events.push(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
      buf = buf.slice(nl + 1);
    }
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, events, exited, stderr: () => stderr };
}

describe('provline station', () => {
  it('--once over two ports per profile (HSM keys wrapped and plain, device keys registered by the CLI): all verified and connected, exit 0', async () => {
    const lots = await Promise.all(['mcu-wrapped', 'nrf91-plain', 'nrf91-device'].map((p) => seed(p, 2)));
    const rigs = await Promise.all(
      lots.map((lot) =>
        Promise.all(lot.devices.map((d, i) => rig(lot.driver, d, lot.kek, { ser2net: i === 1 }))),
      ),
    );
    const runs = await Promise.all(
      lots.map((lot, i) =>
        runCli(
          [
            'station',
            '--once',
            '--json',
            '--profile',
            lot.profile,
            '--station-id',
            `cli-${i}`,
            ...ports(rigs[i]!.map((r) => r.target)),
          ],
          { env: env() },
        ),
      ),
    );
    for (const [i, r] of runs.entries()) {
      const { devices } = lots[i]!;
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const results = lines(r.stdout).filter((e) => e.event === 'result');
      expect(results.map((e) => [e.serial, e.outcome]).sort()).toEqual(
        devices.map((d) => [d.serial, 'verified']).sort(),
      );
      expect(results.every((e) => e.connected === true)).toBe(true);
      expect(lines(r.stdout).at(-1)).toMatchObject({ event: 'summary', verified: 2, connected: 2 });
      for (const d of devices) expect((await world.journal.get(d.serial))?.state).toBe('connected');
      // Private keys crossed the wire to the devices, and went nowhere else.
      expect(r.stdout + r.stderr).not.toMatch(/PRIVATE KEY/);
    }
  });

  it('SIGTERM in the middle of a write: abandoned at once with --grace 0 (exit 4), finished within the grace otherwise', async () => {
    const { devices, kek, driver } = await seed('mcu-wrapped', 2);
    const slow = await Promise.all(devices.map((d) => rig(driver, d, kek, { baudRate: 19_200 })));
    const [cut, graceful] = [
      spawnStation(['--profile', 'mcu-wrapped', '--grace', '0', '--port', slow[0]!.target]),
      spawnStation(['--profile', 'mcu-wrapped', '--grace', '20000', '--port', slow[1]!.target]),
    ];
    for (const s of [cut, graceful]) {
      await waitFor('a write in progress', () => s.events.some((e) => e.event === 'progress'), 60_000);
      s.child.kill('SIGTERM');
    }
    expect(await cut.exited, cut.stderr()).toBe(4);
    expect(cut.events.find((e) => e.event === 'result')).toMatchObject({
      outcome: 'abandoned',
      code: 'ABORTED',
    });
    expect((await world.journal.get(devices[0]!.serial))?.state).toBe('registered');

    expect(await graceful.exited, graceful.stderr()).toBe(0);
    expect(graceful.events.find((e) => e.event === 'result')).toMatchObject({ outcome: 'verified' });
    expect((await world.journal.get(devices[1]!.serial))?.state).toBe('connected');
  });

  it('offline: prefetch, flash with Redis unreachable (results kept locally), then sync, idempotently', async () => {
    const { devices, kek, driver, batchId } = await seed('mcu-wrapped', 1);
    const cache = join(dir, `cache${++n}`);
    const pre = await runCli(['station', 'prefetch', '--batch', batchId, '--cache', cache, '--json'], {
      env: env(),
    });
    expect(pre.code, pre.stderr).toBe(0);
    expect(JSON.parse(pre.stdout)).toMatchObject({ batchId, profile: 'mcu-wrapped', bundles: 1 });
    expect(readFileSync(join(cache, 'devices', `${devices[0]!.serial}.json`), 'utf8')).not.toMatch(
      /PRIVATE KEY/,
    );

    const dead = `redis://127.0.0.1:${await freePort()}`;
    const r = await rig(driver, devices[0]!, kek);
    const stranger = await rig(driver, { serial: 'NOT-PREFETCHED', thingName: 'x' }, kek);
    const offline = await runCli(
      [
        'station',
        '--once',
        '--json',
        '--profile',
        'mcu-wrapped',
        '--cache',
        cache,
        '--port',
        r.target,
        '--port',
        stranger.target,
      ],
      { env: { ...env(), PROVLINE_REDIS_URL: dead } },
    );
    expect(offline.code, offline.stderr).toBe(4); // the stranger was refused
    const results = lines(offline.stdout).filter((e) => e.event === 'result');
    // The device's network is its own: it connects while the station's journal is unreachable.
    expect(results.find((e) => e.serial === devices[0]!.serial)).toMatchObject({
      outcome: 'verified',
      connected: true,
      recorded: 'local',
    });
    expect(results.find((e) => e.serial === 'NOT-PREFETCHED')).toMatchObject({
      outcome: 'refused',
      code: 'STATION_DEVICE_UNKNOWN',
    });
    expect(lines(offline.stdout)[0]).toMatchObject({ event: 'station', journal: 'offline' });
    expect((await world.journal.get(devices[0]!.serial))?.state).toBe('registered');

    const sync = await runCli(['station', 'sync', '--cache', cache, '--json'], { env: env() });
    expect(sync.code, sync.stderr).toBe(0);
    expect(JSON.parse(sync.stdout)).toMatchObject({ applied: 3, superseded: 0, rejected: [] });
    const rec = await world.journal.get(devices[0]!.serial);
    expect(rec).toMatchObject({
      state: 'connected',
      fields: { port: r.target, verifiedBy: 'read-back+possession' },
    });

    const again = await runCli(['station', 'sync', '--cache', cache, '--json'], { env: env() });
    expect(JSON.parse(again.stdout)).toMatchObject({ applied: 0, rejected: [] });
    // Even replayed from the start (cursor lost), nothing changes.
    rmSync(join(cache, 'results.synced'));
    const replay = await runCli(['station', 'sync', '--cache', cache, '--json'], { env: env() });
    expect(JSON.parse(replay.stdout)).toMatchObject({ applied: 1, superseded: 2, rejected: [] });
    expect((await world.journal.get(devices[0]!.serial))?.at.verified).toBe(rec?.at.verified);
  });

  it('offline: the visit keeps its exchange log in the cache (no key material, bounded), and sync brings it to the journal once, for `provline device --log`', async () => {
    const { devices, kek, driver, batchId } = await seed('mcu-wrapped', 1);
    const serial = devices[0]!.serial;
    const cache = join(dir, `cache${++n}`);
    const pre = await runCli(['station', 'prefetch', '--batch', batchId, '--cache', cache, '--json'], {
      env: env(),
    });
    expect(pre.code, pre.stderr).toBe(0);
    const r = await rig(driver, devices[0]!, kek);
    const dead = `redis://127.0.0.1:${await freePort()}`;
    const offline = await runCli(
      ['station', '--once', '--json', '--profile', 'mcu-wrapped', '--cache', cache, '--port', r.target],
      { env: { ...env(), PROVLINE_REDIS_URL: dead } },
    );
    expect(offline.code, offline.stderr).toBe(0);
    expect(lines(offline.stdout).find((e) => e.event === 'result')).toMatchObject({
      serial,
      outcome: 'verified',
      recorded: 'local',
    });

    // Kept in the cache: one visit, the exchange described, no key bytes, 0600.
    const kept = readFileSync(join(cache, 'visits.ndjson'), 'utf8');
    const logged = kept
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { serial: string; log: VisitLog });
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({
      serial,
      log: {
        offline: true,
        outcome: 'verified',
        port: r.target,
        recorded: ['flashed', 'verified', 'connected'],
      },
    });
    expect(logged[0]!.log.lines.length).toBeGreaterThan(5);
    expect(logged[0]!.log.lines.length).toBeLessThanOrEqual(VISIT_LINES_MAX);
    const bundle = (
      JSON.parse(readFileSync(join(cache, 'devices', `${serial}.json`), 'utf8')) as {
        lookup: { bundle: { wrappedKey: string } };
      }
    ).lookup.bundle;
    expect(bundle.wrappedKey.length).toBeGreaterThan(40);
    expect(kept).not.toContain(bundle.wrappedKey.slice(0, 40));
    expect(kept).not.toMatch(/PRIVATE KEY/);
    expect(statSync(join(cache, 'visits.ndjson')).mode & 0o777).toBe(0o600);
    // Nothing in the journal before sync.
    const before = await runCli(['device', serial, '--log', '--json'], { env: env() });
    expect((JSON.parse(before.stdout) as { visits: VisitLog[] }).visits).toEqual([]);

    const sync = await runCli(['station', 'sync', '--cache', cache, '--json'], { env: env() });
    expect(sync.code, sync.stderr).toBe(0);
    expect(JSON.parse(sync.stdout)).toMatchObject({ applied: 3, visits: 1, damagedVisits: [] });
    // Replayed from the start (both cursors lost): the log is kept once.
    rmSync(join(cache, 'results.synced'));
    rmSync(join(cache, 'visits.synced'));
    const replay = await runCli(['station', 'sync', '--cache', cache, '--json'], { env: env() });
    expect(JSON.parse(replay.stdout)).toMatchObject({ visits: 1, rejected: [] });

    const shown = await runCli(['device', serial, '--log', '--json'], { env: env() });
    expect(shown.code, shown.stderr).toBe(0);
    const { visits } = JSON.parse(shown.stdout) as { visits: VisitLog[] };
    expect(visits).toHaveLength(1);
    expect(visits[0]).toEqual(logged[0]!.log);
    const text = await runCli(['device', serial, '--log'], { env: env() });
    expect(text.stdout).toContain('(offline: kept in the station cache, synced later)');
    expect(text.stdout).toMatch(/ms > /);
    expect(text.stdout).toMatch(/ms < /);
  });

  it('usage: no port (exit 2), a bad port (exit 3), no Redis and no cache (exit 1)', async () => {
    const [noPort, badPort, noRedis] = await Promise.all([
      runCli(['station', '--profile', 'mcu-wrapped'], { env: env() }),
      runCli(['station', '--profile', 'mcu-wrapped', '--port', 'COM3'], { env: env() }),
      runCli(['station', '--profile', 'mcu-wrapped', '--port', '/dev/null'], {
        env: { ...env(), PROVLINE_REDIS_URL: `redis://127.0.0.1:${await freePort()}` },
      }),
    ]);
    expect(noPort.code).toBe(2);
    expect(badPort).toMatchObject({ code: 3, stderr: expect.stringContaining('TRANSPORT_BAD_TARGET') });
    expect(noRedis).toMatchObject({
      code: 1,
      stderr: expect.stringContaining('STATION_JOURNAL_UNREACHABLE'),
    });
  });
});
