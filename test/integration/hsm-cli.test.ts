/**
 * `provline hsm …` as an operator runs it: the built CLI against a SoftHSM token in this file's
 * own home. Checks outputs with OpenSSL, exit codes for a wrong PIN and a missing token, and
 * that a PIN planted in the environment never shows up in any output, file or log.
 */
import { execFileSync } from 'node:child_process';
import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pkcs11js from 'pkcs11js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { trimToDer } from '../../src/core/der.js';
import { openHsm } from '../../src/hsm/hsm.js';
import { stackPaths } from '../../src/stack/home.js';
import { hsmUp, readPinFile, SOFTHSM_MODULE } from '../../src/stack/softhsm.js';
import { json, runCli, type CliResult } from '../helpers/cli.js';
import { removeHome, tempDir } from '../helpers/home.js';

interface Identity {
  serial: string;
  thingName: string;
  keyType: string;
  csrPem: string;
  publicKey: string;
  wrappedKey: string;
  kekId: string;
  files: { csr: string; wrappedKey: string };
}

describe('provline hsm (CLI)', () => {
  let home: string;
  const kek = randomBytes(32);
  // SOFTHSM2_CONF from the outer environment would override the stack's token.
  const env = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => ({
    PROVLINE_HOME: home,
    SOFTHSM2_CONF: undefined,
    PROVLINE_HSM_PIN: undefined,
    ...extra,
  });
  const all = (r: CliResult): string => r.stdout + r.stderr;

  // The shared token holds the demo profile's KEK from the start (a fixture, not a test's
  // leftover); the test of `kek import` itself has a token of its own.
  beforeAll(async () => {
    home = tempDir('provline-hsm-cli-');
    hsmUp(stackPaths(home));
    writeFileSync(join(home, 'kek.hex'), `${kek.toString('hex')}\n`);
    const r = await runCli(['hsm', 'kek', 'import', '--profile', 'demo', '--file', join(home, 'kek.hex')], {
      env: env(),
    });
    expect(r.code, r.stderr).toBe(0);
  });
  afterAll(async () => {
    await removeHome(home);
  });

  it('hsm info --json shows module, token, session sizing and mechanisms', async () => {
    const r = await runCli(['hsm', 'info', '--json'], { env: env() });
    expect(r.code).toBe(0);
    const info = json<{
      token: { label: string };
      sessions: { pool: number };
      mechanisms: Array<{ name: string; supported: boolean }>;
    }>(r);
    expect(info.token.label).toBe('provline');
    expect(info.sessions.pool).toBe(8);
    expect(info.mechanisms.find((m) => m.name === 'CKM_AES_KEY_WRAP_PAD')?.supported).toBe(true);
  });

  it('kek import takes the agreed key once (exit 3 the second time); keygen without a KEK says how to make one', async () => {
    const own = tempDir('provline-hsm-kek-');
    hsmUp(stackPaths(own));
    const env = (): NodeJS.ProcessEnv => ({
      PROVLINE_HOME: own,
      SOFTHSM2_CONF: undefined,
      PROVLINE_HSM_PIN: undefined,
    });
    const missing = await runCli(
      ['hsm', 'keygen', '--profile', 'demo', '--serial', 'SN0', '--out-dir', join(own, 'out')],
      { env: env() },
    );
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain('HSM_KEK_NOT_FOUND');
    expect(missing.stderr).toContain('hsm kek create');

    const r = await runCli(
      ['hsm', 'kek', 'import', '--profile', 'demo', '--file', join(home, 'kek.hex'), '--json'],
      { env: env() },
    );
    expect(r.code).toBe(0);
    expect(json<{ kek: { uri: string } }>(r).kek.uri).toMatch(
      /^pkcs11:token=provline;object=provline-demo-kek;id=(%[0-9A-F]{2}){16};type=secret-key$/,
    );
    const again = await runCli(
      ['hsm', 'kek', 'import', '--profile', 'demo', '--file', join(home, 'kek.hex'), '--json'],
      { env: env() },
    );
    expect(again.code).toBe(3);
    expect(json<{ error: { code: string } }>(again).error.code).toBe('HSM_KEK_EXISTS');
    expect(all(again)).not.toContain(kek.toString('hex'));
  });

  it('keygen writes a verifiable CSR and a wrapped key that OpenSSL unwraps to the CSR key', async () => {
    const out = join(home, 'out');
    const r = await runCli(['hsm', 'keygen', '--profile', 'demo', '--serial', 'SN0001', '--out-dir', out], {
      env: env(),
    });
    expect(r.code).toBe(0);
    const id = json<Identity>(r);
    expect(id).toMatchObject({ serial: 'SN0001', thingName: 'sensor-SN0001', keyType: 'P-256' });
    expect(readdirSync(out).sort()).toEqual(['SN0001.csr.pem', 'SN0001.key.wrapped']);
    const verify = execFileSync('openssl', ['req', '-in', id.files.csr, '-verify', '-noout', '-subject'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    expect(verify).toContain('CN = sensor-SN0001');
    expect(verify).toContain('O = provline demo');
    const keyDer = join(home, 'SN0001.key.der');
    try {
      execFileSync('openssl', [
        'enc',
        '-d',
        '-id-aes256-wrap-pad',
        '-K',
        kek.toString('hex'),
        '-iv',
        'A65959A6',
        '-in',
        id.files.wrappedKey,
        '-out',
        keyDer,
      ]);
      const priv = createPrivateKey({ key: trimToDer(readFileSync(keyDer)), format: 'der', type: 'pkcs8' });
      const csrPub = execFileSync('openssl', ['req', '-in', id.files.csr, '-pubkey', '-noout'], {
        encoding: 'utf8',
      });
      expect(createPublicKey(priv).equals(createPublicKey(csrPub))).toBe(true);
    } finally {
      rmSync(keyDer, { force: true });
    }
  });

  it('a wrong PIN exits 3 with HSM_PIN_INCORRECT, and the planted PIN appears nowhere', async () => {
    const planted = 'PLANTED-pin-5V8K2';
    const r = await runCli(
      ['hsm', 'keygen', '--profile', 'demo', '--serial', 'SN0002', '--out-dir', join(home, 'out'), '--json'],
      {
        env: env({ PROVLINE_HSM_PIN: planted, PROVLINE_LOG_LEVEL: 'trace', PROVLINE_DEBUG: '1' }),
      },
    );
    expect(r.code).toBe(3);
    expect(json<{ error: { code: string; retryable: boolean } }>(r).error).toMatchObject({
      code: 'HSM_PIN_INCORRECT',
      retryable: false,
    });
    expect(all(r)).not.toContain(planted);
  });

  it('the real PIN, given through the environment with trace logging, appears in no output, file or log', async () => {
    const pin = readPinFile(stackPaths(home).userPinFile);
    const out = join(home, 'out-pin');
    const runs = [
      await runCli(['hsm', 'keygen', '--profile', 'demo', '--serial', 'SN0003', '--out-dir', out], {
        env: env({ PROVLINE_HSM_PIN: pin, PROVLINE_LOG_LEVEL: 'trace', PROVLINE_DEBUG: '1' }),
      }),
      await runCli(['hsm', 'info'], { env: env({ PROVLINE_HSM_PIN: pin, PROVLINE_LOG_LEVEL: 'trace' }) }),
      await runCli(['hsm', 'bench', '--devices', '50', '--rounds', '1', '--json'], {
        env: env({ PROVLINE_HSM_PIN: pin, PROVLINE_LOG_LEVEL: 'trace' }),
      }),
    ];
    for (const r of runs) {
      expect(r.code, r.stderr).toBe(0);
      expect(all(r)).not.toContain(pin);
    }
    for (const f of readdirSync(out)) expect(readFileSync(join(out, f)).includes(pin)).toBe(false);
    // Every log the stack keeps in the home (redis, aws stand-in) is free of it too.
    const logs = execFileSync('find', [home, '-name', '*.log', '-type', 'f'], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean);
    for (const f of logs) expect(readFileSync(f, 'utf8')).not.toContain(pin);
  });

  it('a missing token exits 1 with HSM_TOKEN_NOT_FOUND and names the tokens there are', async () => {
    const r = await runCli(['hsm', 'info', '--json'], {
      env: env({ PROVLINE_HSM_TOKEN: 'pkcs11:token=line9' }),
    });
    expect(r.code).toBe(1);
    const e = json<{ error: { code: string; hint: string } }>(r).error;
    expect(e.code).toBe('HSM_TOKEN_NOT_FOUND');
    expect(e.hint).toContain('"provline"');
  });

  it('hsm bench prints provline and raw C throughput and their ratio', async () => {
    const r = await runCli(['hsm', 'bench', '--devices', '300', '--rounds', '1', '--json'], { env: env() });
    expect(r.code, r.stderr).toBe(0);
    const b = json<{
      devices: number;
      devicesPerSecond: number;
      raw: { devicesPerSecond: number };
      ratio: number;
    }>(r);
    expect(b.devices).toBe(300);
    expect(b.devicesPerSecond).toBeGreaterThan(0);
    expect(b.raw.devicesPerSecond).toBeGreaterThan(0);
    expect(b.ratio).toBeCloseTo(b.devicesPerSecond / b.raw.devicesPerSecond, 2);
  });

  it('hsm bench --work all measures each work against raw C, and leaves no CA objects on the token', async () => {
    const tokenLabels = async (): Promise<string[]> => {
      const paths = stackPaths(home);
      const hsm = await openHsm(
        {
          module: SOFTHSM_MODULE,
          token: 'provline',
          pinFile: paths.userPinFile,
          pinEnv: 'PROVLINE_TEST_UNSET_PIN',
          sessions: 1,
          softhsm2Conf: paths.softhsm2Conf,
          localToken: true,
        },
        { env: {} },
      );
      try {
        return await hsm.pool.withSession((s) =>
          s
            .find([], 1000)
            .map((h) => s.attributes(h, [pkcs11js.CKA_LABEL]).get(pkcs11js.CKA_LABEL)?.toString() ?? '')
            .sort(),
        );
      } finally {
        hsm.close();
      }
    };
    const before = await tokenLabels();
    const r = await runCli(['hsm', 'bench', '--work', 'all', '--devices', '40', '--rounds', '1', '--json'], {
      env: env(),
    });
    expect(r.code, r.stderr).toBe(0);
    const b = json<{
      works: Record<
        string,
        {
          work: string;
          devices: number;
          devicesPerSecond: number;
          raw: { devicesPerSecond: number };
          ratio: number;
        }
      >;
      ratios: Record<string, number>;
      goal: number;
    }>(r);
    expect(Object.keys(b.works)).toEqual(['csr', 'ca-key', 'ca-csr']);
    for (const [work, w] of Object.entries(b.works)) {
      expect(w.work).toBe(work);
      expect(w.devices).toBe(40);
      expect(w.devicesPerSecond).toBeGreaterThan(0);
      expect(w.raw.devicesPerSecond).toBeGreaterThan(0);
      expect(w.ratio).toBeCloseTo(w.devicesPerSecond / w.raw.devicesPerSecond, 2);
      expect(b.ratios[work]).toBe(w.ratio);
    }
    expect(b.goal).toBe(0.8);
    // The bench's CA (key pair and certificate) is gone; nothing else changed on the token.
    const after = await tokenLabels();
    expect(after.filter((l) => l.startsWith('provline-bench'))).toEqual([]);
    expect(after).toEqual(before);
  });

  it('the PIN is never an option (usage error for --pin)', async () => {
    const r = await runCli(['hsm', 'info', '--pin=1234'], { env: env() });
    expect(r.code).toBe(2);
  });
});
