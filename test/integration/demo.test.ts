/** `provline demo` at a small size, so the README's first command cannot silently rot. */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { removeHome, tempDir } from '../helpers/home.js';

describe('provline demo', () => {
  const home = tempDir('provline-demo-');
  afterAll(() => removeHome(home));

  it('runs every available stage, leaves nothing running, and prints no secret', async () => {
    const r = await runCli(['demo', '--devices', '3'], { env: { PROVLINE_HOME: home } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('valid: 3 devices');
    expect(r.stdout).toMatch(/3 identities in/);

    const csr = join(home, 'demo/identities/DEMO000002.csr.pem');
    const verify = execFileSync('openssl', ['req', '-in', csr, '-verify', '-noout', '-subject'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    expect(verify).toContain('CN = sensor-DEMO000002');
    expect(existsSync(join(home, 'demo/identities/DEMO000002.key.wrapped'))).toBe(true);
    expect(statSync(join(home, 'demo/demo-kek.bin')).mode & 0o777).toBe(0o600);

    const pin = readFileSync(join(home, 'hsm/user.pin'), 'utf8').trim();
    expect(r.stdout + r.stderr).not.toContain(pin);
    const status = await runCli(['stack', 'status', '--json'], { env: { PROVLINE_HOME: home } });
    expect(JSON.parse(status.stdout).redis.running).toBe(false);
  });

  it('runs again on the same home (idempotent KEK and token)', async () => {
    const r = await runCli(['demo', '--devices', '2'], { env: { PROVLINE_HOME: home } });
    expect(r.code, r.stderr).toBe(0);
  });
});
