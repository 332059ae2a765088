/**
 * `provline stack up | down | status` against the real services: redis-server answers PING on
 * its port, SoftHSM shows the token through softhsm2-util with the stack's config, `up` is
 * idempotent, and `down` leaves no process it started.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAlive } from '../../src/core/proc.js';
import { json, runCli, type CliResult } from '../helpers/cli.js';
import { removeHome, tempDir } from '../helpers/home.js';

interface Status {
  home: string;
  redis: { url: string | null; pid: number | null; running: boolean };
  hsm: { module: string; softhsm2Conf: string; token: string; pinFile: string; initialized: boolean };
  aws: Record<string, unknown>;
}

describe('local stack', () => {
  // A stack brought up once for the tests that only look at it or bring it up again. Tests that
  // stop a stack, or need none, use a home of their own: no test depends on what another did.
  let home: string;
  let up: CliResult;
  const env = () => ({ PROVLINE_HOME: home });

  beforeAll(async () => {
    home = tempDir('provline-stack-');
    up = await runCli(['stack', 'up', '--json'], { env: env() });
  });
  afterAll(async () => {
    await removeHome(home);
  });

  it('status before up: nothing running', async () => {
    const fresh = tempDir('provline-stack-fresh-');
    const s = json<Status>(await runCli(['stack', 'status', '--json'], { env: { PROVLINE_HOME: fresh } }));
    expect(s.home).toBe(fresh);
    expect(s.redis).toEqual({ url: null, pid: null, running: false });
    expect(s.hsm.initialized).toBe(false);
    for (const key of ['endpoint', 'region', 'credentialsFile', 'profile', 'bucket', 'running'])
      expect(s.aws).toHaveProperty(key);
  });

  it('up starts a private Redis with AOF and a SoftHSM token with PIN files nobody else can read', () => {
    const r = up;
    expect(r.code, r.stderr).toBe(0);
    const s = json<Status>(r);
    expect(s.redis.running).toBe(true);
    const port = new URL(s.redis.url!).port;
    expect(new URL(s.redis.url!).hostname).toBe('127.0.0.1');
    expect(execFileSync('redis-cli', ['-p', port, 'ping'], { encoding: 'utf8' }).trim()).toBe('PONG');
    expect(
      execFileSync('redis-cli', ['-p', port, 'config', 'get', 'appendonly'], { encoding: 'utf8' }),
    ).toContain('yes');
    expect(execFileSync('redis-cli', ['-p', port, 'config', 'get', 'dir'], { encoding: 'utf8' })).toContain(
      home,
    );

    expect(s.hsm).toMatchObject({
      module: '/usr/lib/softhsm/libsofthsm2.so',
      token: 'provline',
      initialized: true,
    });
    const slots = execFileSync('softhsm2-util', ['--show-slots'], {
      encoding: 'utf8',
      env: { ...process.env, SOFTHSM2_CONF: s.hsm.softhsm2Conf },
    });
    expect(slots).toMatch(/Label:\s+provline\s*\n/);
    expect(slots).toMatch(/User PIN init\.:\s+yes/);
    for (const pinFile of [s.hsm.pinFile, s.hsm.pinFile.replace('user.pin', 'so.pin')]) {
      expect(statSync(pinFile).mode & 0o777).toBe(0o600);
      const pin = readFileSync(pinFile, 'utf8').trim();
      expect(pin.length).toBeGreaterThanOrEqual(16);
      expect(r.stdout + r.stderr).not.toContain(pin);
    }
  });

  it('up is idempotent: same Redis process, same token, no second token', async () => {
    const before = json<Status>(await runCli(['stack', 'status', '--json'], { env: env() }));
    expect(before.redis.running).toBe(true);
    const again = json<Status>(await runCli(['stack', 'up', '--json'], { env: env() }));
    expect(again.redis.pid).toBe(before.redis.pid);
    expect(again.redis.url).toBe(before.redis.url);
    const slots = execFileSync('softhsm2-util', ['--show-slots'], {
      encoding: 'utf8',
      env: { ...process.env, SOFTHSM2_CONF: again.hsm.softhsm2Conf },
    });
    expect(slots.match(/Label:\s+provline\s*\n/g)).toHaveLength(1);
  });

  it('the human status is readable and never shows a PIN', async () => {
    const r = await runCli(['stack', 'status'], { env: env() });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^home\s+/m);
    expect(r.stdout).toMatch(/^redis\s+running/m);
    expect(r.stdout).not.toContain(readFileSync(`${home}/hsm/user.pin`, 'utf8').trim());
  });

  it('down stops every process it started and keeps the data; up again reuses the port', async () => {
    const own = { PROVLINE_HOME: tempDir('provline-stack-down-') };
    const first = await runCli(['stack', 'up', '--json'], { env: own });
    expect(first.code, first.stderr).toBe(0);
    const before = json<Status>(first);
    const down = json<Status>(await runCli(['stack', 'down', '--json'], { env: own }));
    expect(down.redis.running).toBe(false);
    expect(isAlive(before.redis.pid!, 'redis-server')).toBe(false);
    expect(down.hsm.initialized).toBe(true);
    const stopped = await runCli(['stack', 'status'], { env: own });
    expect(stopped.stdout).toMatch(/^redis\s+stopped/m);
    const again = json<Status>(await runCli(['stack', 'up', '--json'], { env: own }));
    expect(again.redis.url).toBe(before.redis.url);
    await runCli(['stack', 'down'], { env: own });
  });

  it('concurrent HSM commands on a fresh home create one token and never overwrite its PINs', async () => {
    const fresh = tempDir('provline-race-');
    const env = { PROVLINE_HOME: fresh };
    const first = await Promise.all(
      Array.from({ length: 6 }, () => runCli(['hsm', 'info', '--json'], { env })),
    );
    for (const r of first) expect(r.code, r.stderr).toBe(0);
    const pins = readFileSync(`${fresh}/hsm/user.pin`, 'utf8') + readFileSync(`${fresh}/hsm/so.pin`, 'utf8');
    const second = await Promise.all(
      Array.from({ length: 6 }, () => runCli(['hsm', 'info', '--json'], { env })),
    );
    for (const r of second) expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(`${fresh}/hsm/user.pin`, 'utf8') + readFileSync(`${fresh}/hsm/so.pin`, 'utf8')).toBe(
      pins,
    );
    const slots = execFileSync('softhsm2-util', ['--show-slots'], {
      encoding: 'utf8',
      env: { ...process.env, SOFTHSM2_CONF: `${fresh}/hsm/softhsm2.conf` },
    });
    expect(slots.match(/Label:\s+provline\s*\n/g)).toHaveLength(1);
  });
});
