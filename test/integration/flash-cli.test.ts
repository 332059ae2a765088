/** `provline device-sim` as its own process on a real pty, driven by a real driver. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../src/core/proc.js';
import { createDriver, openTransport } from '../../src/flash/index.js';
import { BIN, runCli } from '../helpers/cli.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { makeCa, makeDeviceKey, newKek, wrapKey } from './flash-fixtures.js';

let dir: string;
const pairs: PtyPair[] = [];
const children: ChildProcess[] = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'provline-flash-cli-'));
});
afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
  for (const p of pairs.splice(0)) await p.stop();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function startSim(args: string[]): { child: ChildProcess; events: Record<string, unknown>[] } {
  const child = spawn(process.execPath, [BIN, 'device-sim', '--json', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const events: Record<string, unknown>[] = [];
  let buf = '';
  child.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      events.push(JSON.parse(buf.slice(0, nl)));
      buf = buf.slice(nl + 1);
    }
  });
  return { child, events };
}

describe('provline device-sim', () => {
  it('serves a serial-v1 device with a KEK from a file until SIGTERM', async () => {
    const pair = await startPtyPair(dir, 'cli1');
    pairs.push(pair);
    const kek = newKek();
    const kekFile = join(dir, 'kek.bin');
    writeFileSync(kekFile, kek);
    const { child, events } = startSim([
      '--driver',
      'provline-serial-v1',
      '--port',
      pair.device,
      '--serial',
      'CLI-0001',
      '--no-throttle',
      '--kek-file',
      kekFile,
    ]);
    await waitFor('device-sim ready', () => events.find((e) => e.event === 'ready'), 30_000);

    const transport = await openTransport(pair.host);
    const driver = createDriver({ driver: 'provline-serial-v1', transport });
    expect((await driver.readIdentity()).serial).toBe('CLI-0001');
    const ca = await makeCa();
    const key = await makeDeviceKey();
    const creds = {
      rootCaPem: ca.rootCaPem,
      certificatePem: await ca.issue('CLI-0001', key.spkiDer),
      wrappedKey: wrapKey(kek, key.pkcs8Der),
    };
    expect((await driver.writeCredentials(creds)).verify.ok).toBe(true);
    await driver.close();
    await transport.close();

    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(events.at(-1)).toMatchObject({ event: 'stopped', reason: 'SIGTERM' });
  });

  it('exits on its own after an unplug fault', async () => {
    const pair = await startPtyPair(dir, 'cli2');
    pairs.push(pair);
    const { child, events } = startSim([
      '--driver',
      'nordic-at',
      '--port',
      pair.device,
      '--imei',
      '352656100000099',
      '--faults',
      'unplug@identity',
      '--no-throttle',
    ]);
    await waitFor('device-sim ready', () => events.find((e) => e.event === 'ready'), 30_000);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const transport = await openTransport(pair.host);
    const driver = createDriver({
      driver: 'nordic-at',
      transport,
      timing: { commandTimeoutMs: 200, attempts: 1 },
    });
    await expect(driver.readIdentity()).rejects.toMatchObject({ code: 'DEVICE_TIMEOUT' });
    expect(await exited).toBe(0);
    expect(events.at(-1)).toMatchObject({ event: 'stopped', reason: 'unplugged' });
    await transport.close();
  });

  it('refuses a bad fault spec and a short KEK file as usage / input errors', async () => {
    const bad = await runCli([
      'device-sim',
      '--driver',
      'nordic-at',
      '--port',
      '/nonexistent',
      '--faults',
      'explode',
    ]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/unknown fault kind "explode"/);
    const kekFile = join(dir, 'short.bin');
    writeFileSync(kekFile, Buffer.alloc(16));
    const short = await runCli([
      'device-sim',
      '--driver',
      'provline-serial-v1',
      '--port',
      '/nonexistent',
      '--kek-file',
      kekFile,
    ]);
    expect(short.code).toBe(3);
    expect(short.stderr).toMatch(/HSM_KEK_FILE_INVALID/);
  });
});
