/**
 * `provline device` on a real stack: a device the demo flashed and connected (states with their
 * station and port, its certificate ACTIVE in the stand-in's registry, found again by --cert,
 * its station log without a wrapped key, a plain key or the PIN), a device whose registration
 * failed and that was submitted again in a second batch (both batches shown, the first with its
 * error code), a registry that does not answer (said, not fatal), and serials and certificates
 * never seen (exit 3).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VisitLog } from '../../src/batch/journal.js';
import type { BatchHistory } from '../../src/jobs/device-history.js';
import { json, runCli } from '../helpers/cli.js';
import { removeHome, tempDir } from '../helpers/home.js';

interface DeviceJson {
  serial: string;
  batches: Array<BatchHistory & { certificate?: { status: string; unreachable?: string } }>;
  visits?: VisitLog[];
}

/** The demo at its smallest on a busy machine: one sensor, one modem. */
const DEMO_BUDGET_MS = 150_000;

describe('provline device', () => {
  const home = tempDir('provline-device-');
  const env = { PROVLINE_HOME: home };
  let redis: Redis;
  let sensor: string;
  let modem: string;

  beforeAll(async () => {
    const r = await runCli(['demo', '--devices', '2', '--ports', '2', '--keep'], {
      env,
      timeoutMs: DEMO_BUDGET_MS,
    });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    sensor = /DEMO\d{3}-0001/.exec(r.stdout)![0];
    modem = /3526561\d{8}/.exec(r.stdout)![0];
    const status = json<{ redis: { url: string } }>(await runCli(['stack', 'status', '--json'], { env }));
    redis = new Redis(status.redis.url);
  }, DEMO_BUDGET_MS + 10_000);

  afterAll(async () => {
    redis?.disconnect();
    await removeHome(home);
  });

  it('answers for a flashed device: batch, profile, strategy, each state with its time, station and port, the certificate ACTIVE in the registry now; --cert finds it', async () => {
    const d = json<DeviceJson>(await runCli(['device', sensor, '--json'], { env }));
    expect(d.serial).toBe(sensor);
    expect(d.batches).toHaveLength(1);
    const b = d.batches[0]!;
    expect(b).toMatchObject({
      current: true,
      profile: 'demo',
      strategy: 'bulk',
      state: 'connected',
      thingName: `sensor-${sensor}`,
    });
    expect(b.states.map((s) => s.state)).toEqual([
      'accepted',
      'keyed',
      'registering',
      'registered',
      'flashed',
      'verified',
      'connected',
    ]);
    for (const s of b.states.filter((x) => ['flashed', 'verified', 'connected'].includes(x.state))) {
      expect(s.station).toBe('demo');
      expect(s.port).toMatch(/port\d-host$/);
    }
    expect(b.certificateId).toMatch(/^[0-9a-f]{64}$/);
    expect(b.certificate).toEqual({ certificateId: b.certificateId, status: 'ACTIVE' });

    const byCert = json<DeviceJson>(await runCli(['device', '--cert', b.certificateId!, '--json'], { env }));
    expect(byCert.serial).toBe(sensor);

    const text = await runCli(['device', sensor], { env });
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(`batch ${b.batchId} (now): profile demo, strategy bulk`);
    expect(text.stdout).toContain(`certificate ${b.certificateId} (ACTIVE in the registry now)`);
  });

  it("keeps each visit's exchange, and never a wrapped key, a plain key or the PIN", async () => {
    const d = json<DeviceJson>(await runCli(['device', sensor, '--log', '--json'], { env }));
    const [visit] = d.visits!;
    expect(visit).toMatchObject({ stationId: 'demo', driver: 'provline-serial-v1', outcome: 'verified' });
    expect(visit!.recorded).toEqual(['flashed', 'verified', 'connected']);
    const lines = visit!.lines.map((l) => `${l.dir} ${l.text}`);
    expect(lines).toContain('> CHUNK #14 wrappedKey at 0, 80 bytes');
    expect(lines.some((l) => /^< CONNECT answer #\d+ OK: 1 attempt: CONNACK 0$/.test(l))).toBe(true);

    // What is stored, byte for byte, against the secrets of this home.
    const wrapped = await redis.hget(`provline:dev:${sensor}`, 'wrappedKey');
    expect(wrapped && wrapped.length).toBeGreaterThan(40);
    const wrappedBytes = Buffer.from(wrapped!, 'base64');
    const pin = readFileSync(join(home, 'hsm/user.pin'), 'utf8').trim();
    for (const serial of [sensor, modem]) {
      const stored = (await redis.lrange(`provline:visits:${serial}`, 0, -1)).join('\n');
      expect(stored.length, serial).toBeGreaterThan(500);
      for (const secret of [
        wrapped!,
        wrappedBytes.toString('hex'),
        wrappedBytes.toString('hex').toUpperCase(),
        wrappedBytes.subarray(8, 24).toString('base64'),
        pin,
        'PRIVATE KEY',
      ])
        expect(stored, `${serial}: ${secret.slice(0, 12)}…`).not.toContain(secret);
    }
    // The modem got its key in plain (AT%CMNG type 2): only its length is logged.
    const modemLog = json<DeviceJson>(await runCli(['device', modem, '--log', '--json'], { env }));
    expect(
      modemLog.visits![0]!.lines.some((l) =>
        /^AT%CMNG=0,\d+,2,"…" \(private key, \d+ bytes, content not logged\)$/.test(l.text),
      ),
    ).toBe(true);
  });

  it('answers for a device whose registration failed (with its error code), and after it was submitted again shows both batches', async () => {
    const serial = 'DEVHIST-0001';
    const csv = join(home, 'again.csv');
    writeFileSync(csv, `serial,hw_rev\n${serial},A\n`);
    const faults = {
      failLines: [
        { pattern: serial, error: 'InvalidRequestException', message: 'planted for the device test' },
      ],
    };
    expect((await runCli(['emulator', 'faults', '--set', JSON.stringify(faults)], { env })).code).toBe(0);
    const first = await runCli(['submit', csv, '--profile', 'demo', '--wait', '--json'], { env });
    expect(first.code, first.stdout + first.stderr).toBe(4);
    const failed = json<DeviceJson>(await runCli(['device', serial, '--json'], { env }));
    expect(failed.batches).toHaveLength(1);
    const f = failed.batches[0]!;
    expect(f.state).toBe('failed');
    expect(f.error!.code).toMatch(/^[A-Z_]+$/);
    expect(f.error!.message).toContain('planted for the device test');
    expect(f.states.map((s) => s.state)).toContain('failed');

    expect((await runCli(['emulator', 'faults', '--clear'], { env })).code).toBe(0);
    const second = await runCli(['submit', csv, '--profile', 'demo', '--wait', '--json'], { env });
    expect(second.code, second.stdout + second.stderr).toBe(0);
    const both = json<DeviceJson>(await runCli(['device', serial, '--json'], { env }));
    expect(both.batches.map((b) => [b.current, b.state])).toEqual([
      [true, 'registered'],
      [false, 'failed'],
    ]);
    expect(both.batches[1]).toMatchObject({
      batchId: f.batchId,
      error: f.error,
      profile: 'demo',
      strategy: 'bulk',
    });
    expect(both.batches[0]!.batchId).not.toBe(f.batchId);
    expect(both.batches[0]!.certificate?.status).toBe('ACTIVE');
    const text = await runCli(['device', serial], { env });
    expect(text.stdout).toContain(`batch ${f.batchId} (earlier)`);
    expect(text.stdout).toContain(`error [${f.error!.code}] at stage ${f.error!.stage}: `);
  });

  it('says when the registry does not answer, and still shows the journal', async () => {
    const r = await runCli(['device', sensor, '--json'], {
      env: { ...env, PROVLINE_AWS_ENDPOINT: 'http://127.0.0.1:1' },
    });
    expect(r.code, r.stderr).toBe(0);
    const cert = json<DeviceJson>(r).batches[0]!.certificate!;
    expect(cert.status).toBe('UNKNOWN');
    expect(cert.unreachable).toBeTruthy();
    const text = await runCli(['device', sensor], {
      env: { ...env, PROVLINE_AWS_ENDPOINT: 'http://127.0.0.1:1' },
    });
    expect(text.stdout).toMatch(/status now unknown: the registry did not answer/);
  });

  it('a serial or a certificate never seen: "no such device", exit 3', async () => {
    const r = await runCli(['device', 'NEVER-SEEN-1', '--json'], { env });
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('no such device: NEVER-SEEN-1');
    expect(json<{ error: { code: string } }>(r).error.code).toBe('SERIAL_NOT_FOUND');
    const c = await runCli(['device', '--cert', '0'.repeat(64)], { env });
    expect(c.code).toBe(3);
    expect(c.stderr).toContain(`no device has certificate ${'0'.repeat(64)}`);
  });
});
