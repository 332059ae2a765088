/**
 * `provline emulator` in the foreground: it runs the stand-in's entry point (workers/emulator.ts)
 * as a child, which answers real AWS SDK clients, stops on SIGTERM with the CLI, stops on its
 * own when the CLI is SIGKILLed, and is reported with its stderr when it cannot start.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { IoTClient, ListThingsCommand } from '@aws-sdk/client-iot';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../src/core/proc.js';
import { BIN, runCli } from '../helpers/cli.js';
import { removeHome, tempDir } from '../helpers/home.js';

const KEYS = {
  AWS_ACCESS_KEY_ID: 'AKIAPROVLINEEMUCLI01',
  AWS_SECRET_ACCESS_KEY: 'provline/emulator/cli/secret',
};
const dirs: string[] = [];
const children: ChildProcess[] = [];
const servers: Server[] = [];

afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const s of servers.splice(0)) s.close();
});
afterAll(async () => {
  for (const d of dirs) await removeHome(d);
});

function emulatorCli(dir: string): {
  child: ChildProcess;
  banner: Promise<string>;
  exited: Promise<number | null>;
  stderr: () => string;
} {
  const child = spawn(process.execPath, [BIN, 'emulator', '--state-dir', join(dir, 'state')], {
    env: { ...process.env, PROVLINE_HOME: join(dir, 'home'), PROVLINE_LOG_LEVEL: 'warn', ...KEYS },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const banner = new Promise<string>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.slice(0, out.indexOf('\n')));
    });
    child.once('exit', (code) => reject(new Error(`provline emulator exited (${code}) first: ${err}`)));
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, banner, exited, stderr: () => err };
}

/** The stand-in's IoT endpoint from the CLI's banner. */
function iotUrl(banner: string): string {
  const m = /IoT (http:\/\/127\.0\.0\.1:\d+)/.exec(banner);
  if (!m) throw new Error(`no IoT endpoint in "${banner}"`);
  return m[1]!;
}

/** Whether anything still answers at the endpoint. */
const answers = (url: string): Promise<boolean> =>
  fetch(`${url}/_emulator/faults`).then(
    () => true,
    () => false,
  );

describe('provline emulator (the stand-in in the foreground)', () => {
  it('serves the AWS SDK, and stops with the CLI on SIGTERM (exit 0)', async () => {
    const dir = tempDir('provline-emu-cli-');
    dirs.push(dir);
    const run = emulatorCli(dir);
    const banner = await run.banner;
    expect(banner).toMatch(/^AWS IoT stand-in: IoT http:\/\/127\.0\.0\.1:\d+ {2}S3 .* MQTT localhost:\d+/);
    const url = iotUrl(banner);
    const iot = new IoTClient({
      endpoint: url,
      region: 'us-east-1',
      credentials: { accessKeyId: KEYS.AWS_ACCESS_KEY_ID, secretAccessKey: KEYS.AWS_SECRET_ACCESS_KEY },
    });
    expect((await iot.send(new ListThingsCommand({}))).things).toEqual([]);
    iot.destroy();
    run.child.kill('SIGTERM');
    expect(await run.exited, run.stderr()).toBe(0);
    expect(await answers(url)).toBe(false);
  });

  it('a SIGKILLed CLI leaves no stand-in behind: the child stops on its own', async () => {
    const dir = tempDir('provline-emu-cli-');
    dirs.push(dir);
    const run = emulatorCli(dir);
    const url = iotUrl(await run.banner);
    expect(await answers(url)).toBe(true);
    run.child.kill('SIGKILL');
    await run.exited;
    await waitFor('the orphaned stand-in to stop', async () => !(await answers(url)), 30_000);
  });

  it('a stand-in that cannot start is reported with its stderr, not waited for', async () => {
    const dir = tempDir('provline-emu-cli-');
    dirs.push(dir);
    const taken = createServer();
    servers.push(taken);
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as { port: number }).port;
    const r = await runCli(['emulator', '--state-dir', join(dir, 'state'), '--port', String(port)], {
      env: { PROVLINE_HOME: join(dir, 'home'), ...KEYS },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('the AWS IoT stand-in did not start: it exited (code 1) before it was ready');
    expect(r.stderr).toContain('[STACK_AWS_FAILED]');
    expect(r.stderr).toContain('EADDRINUSE'); // the child's own words
  });
});
