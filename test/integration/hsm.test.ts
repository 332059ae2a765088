/**
 * The HSM stage against real SoftHSM2 (a fresh token in this file's own home), and against a
 * hardware/vendor PKCS#11 module when TEST_HSM_MODULE is set (pending otherwise).
 *
 * Every device identity is checked with OpenSSL: the CSR verifies and carries the HSM's public
 * key; the wrapped key unwraps (`openssl enc -id-aes256-wrap-pad`) under the imported test KEK
 * to a private key matching that public key.
 */
import { execFileSync } from 'node:child_process';
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pkcs11js from 'pkcs11js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KeyType } from '../../src/config/schema.js';
import { trimToDer } from '../../src/core/der.js';
import { ProvlineError } from '../../src/core/errors.js';
import { openHsm, type Hsm } from '../../src/hsm/hsm.js';
import { deviceKeyTemplates, type DeviceIdentity } from '../../src/hsm/identity.js';
import { KEY_TYPE_SPECS } from '../../src/hsm/key-types.js';
import { stackPaths } from '../../src/stack/home.js';
import type { HsmSettings } from '../../src/stack/runtime.js';
import { hsmUp, SOFTHSM_MODULE } from '../../src/stack/softhsm.js';
import { removeHome, tempDir } from '../helpers/home.js';

/** Runs openssl; returns stdout+stderr (openssl prints "verify OK" on stderr). */
function openssl(args: string[], input?: Buffer): string {
  return execFileSync('openssl', args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

async function caught(p: Promise<unknown> | (() => unknown)): Promise<ProvlineError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    if (e instanceof ProvlineError) return e;
    throw e;
  }
  throw new Error('expected a ProvlineError');
}

/** Counts session (non-token) key objects visible to the application. */
async function sessionKeyObjects(hsm: Hsm): Promise<number> {
  return hsm.pool.withSession((s) => s.find([{ type: pkcs11js.CKA_TOKEN, value: false }], 10_000).length);
}

/**
 * The checks every PKCS#11 module must pass. `kekHex` is the KEK's value when the test knows it
 * (imported), so OpenSSL can unwrap independently of the HSM.
 */
function checkIdentity(
  dir: string,
  id: DeviceIdentity,
  keyType: KeyType,
  kekHex: string | undefined,
): Buffer | undefined {
  const csrFile = join(dir, `${id.serial}.csr.pem`);
  writeFileSync(csrFile, `${id.csrPem}\n`);
  const verify = execFileSync('openssl', ['req', '-in', csrFile, '-verify', '-noout', '-subject'], {
    encoding: 'utf8',
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  expect(verify).toContain(`CN = ${id.thingName}`);
  const csrPub = openssl(['req', '-in', csrFile, '-pubkey', '-noout']);
  expect(createPublicKey(csrPub).equals(createPublicKey(id.publicKey))).toBe(true);
  const text = openssl(['req', '-in', csrFile, '-noout', '-text']);
  expect(text).toContain(
    keyType === 'RSA-2048'
      ? 'sha256WithRSAEncryption'
      : keyType === 'P-384'
        ? 'ecdsa-with-SHA384'
        : 'ecdsa-with-SHA256',
  );
  if (kekHex === undefined) return undefined;
  const wrappedFile = join(dir, `${id.serial}.key.wrapped`);
  const keyFile = join(dir, `${id.serial}.key.der`);
  writeFileSync(wrappedFile, Buffer.from(id.wrappedKey, 'base64'));
  try {
    openssl([
      'enc',
      '-d',
      '-id-aes256-wrap-pad',
      '-K',
      kekHex,
      '-iv',
      'A65959A6',
      '-in',
      wrappedFile,
      '-out',
      keyFile,
    ]);
    const der = trimToDer(readFileSync(keyFile));
    const priv = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
    expect(createPublicKey(priv).equals(createPublicKey(id.publicKey))).toBe(true);
    return Buffer.from(der);
  } finally {
    rmSync(keyFile, { force: true }); // plaintext test keys live only for the comparison
  }
}

describe('HSM stage on SoftHSM2', () => {
  let home: string;
  let dir: string;
  let settings: HsmSettings;
  let hsm: Hsm;
  const kekValue = randomBytes(32);
  const kekHex = kekValue.toString('hex');

  beforeAll(() => {
    home = tempDir('provline-hsm-');
    dir = mkdtempSync(join(tmpdir(), 'provline-hsm-out-'));
    const paths = stackPaths(home);
    hsmUp(paths);
    settings = {
      module: SOFTHSM_MODULE,
      token: 'provline',
      pinFile: paths.userPinFile,
      localToken: true,
      pinEnv: 'PROVLINE_TEST_UNSET_PIN',
      sessions: 4,
      softhsm2Conf: paths.softhsm2Conf,
    };
  });
  afterAll(async () => {
    hsm?.close();
    rmSync(dir, { recursive: true, force: true });
    await removeHome(home);
  });

  // Runs before anything logs in: PKCS#11 login state is per process, so once logged in a
  // second login is "already logged in" whatever the PIN.
  it('a wrong PIN fails at open with HSM_PIN_INCORRECT, not retryable, PIN not in the error', async () => {
    const planted = 'planted-PIN-7Q2X';
    const e = await caught(openHsm(settings, { env: { PROVLINE_TEST_UNSET_PIN: planted } }));
    expect(e.code).toBe('HSM_PIN_INCORRECT');
    expect(e.retryable).toBe(false);
    expect(e.kind).toBe('invalid-input');
    expect(e.details.ckr).toBe('CKR_PIN_INCORRECT');
    expect(JSON.stringify(e.toJSON()) + e.message + String(e.stack)).not.toContain(planted);
  });

  it('a missing token fails with HSM_TOKEN_NOT_FOUND listing the tokens there are', async () => {
    const e = await caught(openHsm({ ...settings, token: 'pkcs11:token=no-such-token' }));
    expect(e.code).toBe('HSM_TOKEN_NOT_FOUND');
    expect(e.details.available).toEqual(['provline']);
    const e2 = await caught(openHsm({ ...settings, token: 'pkcs11:token=provline;serial=nope' }));
    expect(e2.code).toBe('HSM_TOKEN_NOT_FOUND');
    const e3 = await caught(openHsm({ ...settings, module: '/nonexistent/libpkcs11.so' }));
    expect(e3.code).toBe('HSM_MODULE_NOT_FOUND');
  });

  it('opens the token by RFC 7512 URI and reports mechanisms and session sizing', async () => {
    hsm = await openHsm({ ...settings, token: 'pkcs11:token=provline' });
    const info = hsm.info();
    expect(info.token.label).toBe('provline');
    expect(info.tokenUri).toBe('pkcs11:token=provline');
    expect(info.sessions).toEqual({ configured: 4, pool: 4, tokenMaxRw: null }); // SoftHSM states no limit
    const mech = Object.fromEntries(info.mechanisms.map((m) => [m.name, m.supported]));
    expect(mech).toMatchObject({
      CKM_EC_KEY_PAIR_GEN: true,
      CKM_ECDSA: true,
      CKM_AES_KEY_WRAP_PAD: true,
      CKM_RSA_PKCS: true,
      CKM_ECDSA_SHA256: false,
    });
  });

  it('imports a KEK as a sensitive, non-extractable token key addressed by URI; never twice', async () => {
    const kek = await hsm.importKek({ label: 'test-kek', value: kekValue });
    expect(kek.uri).toMatch(
      /^pkcs11:token=provline;object=test-kek;id=(%[0-9A-F]{2}|[A-Za-z0-9\-._~:[\]@!$'()*+,=&]){16};type=secret-key$/,
    );
    expect(kek.persistent).toBe(true);
    await hsm.pool.withSession((s) => {
      const [h] = s.find([{ type: pkcs11js.CKA_LABEL, value: 'test-kek' }]);
      const a = s.attributes(h!, [
        pkcs11js.CKA_SENSITIVE,
        pkcs11js.CKA_EXTRACTABLE,
        pkcs11js.CKA_TOKEN,
        pkcs11js.CKA_WRAP,
        pkcs11js.CKA_ENCRYPT,
      ]);
      expect([...a.values()].map((v) => v[0])).toEqual([1, 0, 1, 1, 0]);
      expect(() => s.attributes(h!, [pkcs11js.CKA_VALUE])).toThrow(
        expect.objectContaining({ code: 'HSM_ATTRIBUTE_SENSITIVE' }),
      );
    });
    expect((await caught(hsm.importKek({ label: 'test-kek', value: kekValue }))).code).toBe('HSM_KEK_EXISTS');
    expect((await caught(hsm.importKek({ label: 'short', value: Buffer.alloc(16) }))).code).toBe(
      'HSM_KEK_FILE_INVALID',
    );
  });

  it('a generated KEK is found again by label, and a missing one is HSM_KEK_NOT_FOUND', async () => {
    const made = await hsm.createKek({ label: 'generated-kek' });
    expect(await hsm.findKek('generated-kek')).toEqual(made);
    const e = await caught(
      hsm.createDeviceIdentity({ serial: 'SN-nokek', thingName: 't', keyType: 'P-256', kekLabel: 'nope' }),
    );
    expect(e.code).toBe('HSM_KEK_NOT_FOUND');
    expect(e.kind).toBe('invalid-input');
  });

  const cases: Array<[KeyType, number]> = [
    ['P-256', 3],
    ['P-384', 2],
    ['RSA-2048', 1],
  ];
  for (const [keyType, n] of cases) {
    it(`${keyType}: CSRs verify with openssl, carry the HSM key, and the wrapped key unwraps to it`, async () => {
      for (let i = 0; i < n; i++) {
        const serial = `SN-${keyType}-${i}`;
        const id = await hsm.createDeviceIdentity({
          serial,
          thingName: `sensor-${serial}`,
          keyType,
          kekLabel: 'test-kek',
          subject: { O: 'provline test', C: 'DE' },
        });
        expect(id).toMatchObject({ serial, thingName: `sensor-${serial}`, keyType });
        expect(Object.keys(id).sort()).toEqual([
          'csrPem',
          'kekId',
          'keyType',
          'publicKey',
          'serial',
          'thingName',
          'wrappedKey',
        ]);
        expect(id.kekId).toMatch(/^pkcs11:token=provline;object=test-kek;/);
        const der = checkIdentity(dir, id, keyType, kekHex)!;
        // The HSM-side unwrap (for `plain` delivery) gives the same exact PKCS#8.
        const viaHsm = await hsm.unwrapToPkcs8({ wrappedKey: id.wrappedKey, kekLabel: 'test-kek', keyType });
        if (keyType === 'RSA-2048') {
          expect(
            createPrivateKey({ key: viaHsm, format: 'der', type: 'pkcs8' }).export({ format: 'jwk' }),
          ).toEqual(createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }).export({ format: 'jwk' }));
        } else {
          expect(viaHsm.toString('hex')).toBe(der.toString('hex'));
        }
      }
    });
  }

  it('unwrapping under the wrong KEK is a typed error', async () => {
    const id = await hsm.createDeviceIdentity({
      serial: 'SN-x',
      thingName: 'x',
      keyType: 'P-256',
      kekLabel: 'test-kek',
    });
    const e = await caught(
      hsm.unwrapToPkcs8({ wrappedKey: id.wrappedKey, kekLabel: 'generated-kek', keyType: 'P-256' }),
    );
    expect(e.code).toBe('HSM_WRAPPED_KEY_INVALID');
  });

  it('a failed SoftHSM operation does not poison the next Node crypto call (stale OpenSSL error queue)', async () => {
    const id = await hsm.createDeviceIdentity({
      serial: 'SN-q',
      thingName: 'q',
      keyType: 'P-256',
      kekLabel: 'test-kek',
    });
    await caught(
      hsm.unwrapToPkcs8({ wrappedKey: id.wrappedKey, kekLabel: 'generated-kek', keyType: 'P-256' }),
    );
    // Without the drain this threw "Provider routines::cipher operation failed" on a valid key.
    const valid = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({
      format: 'der',
      type: 'pkcs8',
    });
    expect(() => createPrivateKey({ key: valid, format: 'der', type: 'pkcs8' })).not.toThrow();
  });

  it('device private keys are CKA_SENSITIVE session objects whose value cannot be read', async () => {
    const spec = KEY_TYPE_SPECS['P-256'];
    await hsm.pool.withSession((s) => {
      const { pub, priv } = deviceKeyTemplates(spec, 'SN-sens', Buffer.from('SN-sens'));
      const kp = s.p.C_GenerateKeyPair(s.handle, { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN }, pub, priv);
      try {
        const a = s.attributes(kp.privateKey, [
          pkcs11js.CKA_SENSITIVE,
          pkcs11js.CKA_TOKEN,
          pkcs11js.CKA_EXTRACTABLE,
          pkcs11js.CKA_ALWAYS_SENSITIVE,
          pkcs11js.CKA_LABEL,
          pkcs11js.CKA_ID,
        ]);
        expect(a.get(pkcs11js.CKA_SENSITIVE)![0]).toBe(1);
        expect(a.get(pkcs11js.CKA_ALWAYS_SENSITIVE)![0]).toBe(1);
        expect(a.get(pkcs11js.CKA_TOKEN)![0]).toBe(0);
        expect(a.get(pkcs11js.CKA_LABEL)!.toString()).toBe('SN-sens');
        expect(a.get(pkcs11js.CKA_ID)!.toString()).toBe('SN-sens');
        let err: unknown;
        try {
          s.attributes(kp.privateKey, [pkcs11js.CKA_VALUE]);
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(ProvlineError);
        expect((err as ProvlineError).code).toBe('HSM_ATTRIBUTE_SENSITIVE');
      } finally {
        s.p.C_DestroyObject(s.handle, kp.privateKey);
        s.p.C_DestroyObject(s.handle, kp.publicKey);
      }
    });
  });

  it('destroys every device key: session object count is back to baseline, also after failures', async () => {
    const before = await sessionKeyObjects(hsm);
    await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        hsm.createDeviceIdentity({
          serial: `SN-d${i}`,
          thingName: `d${i}`,
          keyType: 'P-256',
          kekLabel: 'test-kek',
        }),
      ),
    );
    expect(await sessionKeyObjects(hsm)).toBe(before);
    // A failing wrap (the generated KEK has been deleted under us) must still destroy the keys.
    await hsm.pool.withSession((s) => {
      const [h] = s.find([{ type: pkcs11js.CKA_LABEL, value: 'generated-kek' }]);
      s.p.C_DestroyObject(s.handle, h!);
    });
    const e = await caught(
      hsm.createDeviceIdentity({
        serial: 'SN-gone',
        thingName: 'g',
        keyType: 'P-256',
        kekLabel: 'generated-kek',
      }),
    );
    expect(e.code).toBe('HSM_OBJECT_GONE');
    expect(e.retryable).toBe(true);
    expect(await sessionKeyObjects(hsm)).toBe(before);
    // The stale handle was dropped from the cache: the next attempt looks the label up again.
    expect(
      (
        await caught(
          hsm.createDeviceIdentity({
            serial: 'SN-gone',
            thingName: 'g',
            keyType: 'P-256',
            kekLabel: 'generated-kek',
          }),
        )
      ).code,
    ).toBe('HSM_KEK_NOT_FOUND');
  });

  it('runs many identities concurrently on at most the pool size of sessions, each key distinct', async () => {
    const ids = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        hsm.createDeviceIdentity({
          serial: `SN-c${i}`,
          thingName: `c${i}`,
          keyType: 'P-256',
          kekLabel: 'test-kek',
        }),
      ),
    );
    expect(new Set(ids.map((i) => i.publicKey)).size).toBe(60);
    expect(hsm.pool.openSessions).toBeLessThanOrEqual(4);
    checkIdentity(dir, ids[59]!, 'P-256', kekHex);
  });

  it('async and latency-simulating call modes produce valid identities too', async () => {
    const asyncHsm = await openHsm(settings, { mode: 'async', sessions: 2 });
    const slowHsm = await openHsm(settings, { mode: 'async', sessions: 2, simulatedLatencyMs: 1 });
    try {
      for (const h of [asyncHsm, slowHsm]) {
        const id = await h.createDeviceIdentity({
          serial: `SN-m-${h.opsFor('P-256').name}`,
          thingName: 'm',
          keyType: 'P-256',
          kekLabel: 'test-kek',
        });
        checkIdentity(dir, id, 'P-256', kekHex);
      }
    } finally {
      asyncHsm.close();
      slowHsm.close();
    }
  });
});

// The same contract on a real HSM: TEST_HSM_MODULE (library path), TEST_HSM_TOKEN (label or
// URI), TEST_HSM_PIN_FILE, TEST_HSM_KEK_LABEL (an existing wrap-capable KEK, value unknown to
// the test, so the OpenSSL unwrap is skipped and unwrapToPkcs8 is used instead if allowed).
describe.runIf(process.env.TEST_HSM_MODULE)('HSM stage on the hardware module in TEST_HSM_MODULE', () => {
  let hsm: Hsm;
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'provline-hw-'));
    hsm = await openHsm({
      module: process.env.TEST_HSM_MODULE!,
      token: process.env.TEST_HSM_TOKEN ?? 'provline',
      localToken: false,
      pinFile: process.env.TEST_HSM_PIN_FILE,
      pinEnv: 'TEST_HSM_PIN',
      sessions: 4,
      softhsm2Conf: undefined,
    });
  });
  afterAll(() => {
    hsm?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const keyType of ['P-256', 'P-384', 'RSA-2048'] as KeyType[]) {
    it(`${keyType}: creates a verifiable identity and leaves no session objects`, async () => {
      const before = await sessionKeyObjects(hsm);
      const id = await hsm.createDeviceIdentity({
        serial: `HW-${keyType}`,
        thingName: `hw-${keyType}`,
        keyType,
        kekLabel: process.env.TEST_HSM_KEK_LABEL ?? 'provline-kek',
      });
      checkIdentity(dir, id, keyType, process.env.TEST_HSM_KEK_HEX);
      expect(await sessionKeyObjects(hsm)).toBe(before);
    });
  }
});
