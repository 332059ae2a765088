/**
 * Where the HSM PIN comes from when SOFTHSM2_CONF is exported (issue 16, item 4): the stack's
 * own file just works; another file gives an error that names the real cause.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { ProvlineError } from '../../src/core/errors.js';
import { readPin } from '../../src/hsm/pin.js';
import { stackPaths } from '../../src/stack/home.js';
import { resolveRuntime } from '../../src/stack/runtime.js';

// Plain directories: no stack runs in them, so they are removed without `stack down` (which
// would load SoftHSM against the stand-in config written here).
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

/** A home whose stack token is set up (its softhsm2.conf and pin file exist). */
function stackHome(): { home: string; conf: string; pinFile: string } {
  const home = tempDir('provline-pin-home-');
  const paths = stackPaths(home);
  mkdirSync(paths.hsmDir, { recursive: true });
  writeFileSync(paths.softhsm2Conf, `directories.tokendir = ${paths.tokenDir}\n`);
  writeFileSync(paths.userPinFile, '123456\n', { mode: 0o600 });
  return { home, conf: paths.softhsm2Conf, pinFile: paths.userPinFile };
}

function runtimeWith(home: string, env: NodeJS.ProcessEnv) {
  const loaded = loadConfig({ cwd: home, env: { PROVLINE_HOME: home } });
  return resolveRuntime(loaded, env);
}

describe('HSM PIN source with SOFTHSM2_CONF exported', () => {
  it('misleading HSM_PIN_MISSING: an exported SOFTHSM2_CONF naming the stack’s own file uses the stack’s token and pin file', () => {
    const { home, conf, pinFile } = stackHome();
    const hsm = runtimeWith(home, { SOFTHSM2_CONF: conf }).hsm;
    expect(hsm).toMatchObject({ localToken: true, pinFile, softhsm2Conf: conf });
    expect(hsm.pinNote).toBeUndefined();
    expect(readPin(hsm, {})).toBe('123456');
  });

  it('the same file reached through a symbolic link is the stack’s too', () => {
    const { home, conf, pinFile } = stackHome();
    const link = join(tempDir('provline-pin-link-'), 'softhsm2.conf');
    symlinkSync(conf, link);
    expect(runtimeWith(home, { SOFTHSM2_CONF: link }).hsm).toMatchObject({ localToken: true, pinFile });
  });

  it('another SOFTHSM2_CONF and no PIN: the error names that file, the pin file left aside and the sources looked for', () => {
    const { home, pinFile } = stackHome();
    const other = join(tempDir('provline-pin-other-'), 'softhsm2.conf');
    writeFileSync(other, 'directories.tokendir = /nowhere\n');
    const hsm = runtimeWith(home, { SOFTHSM2_CONF: other }).hsm;
    expect(hsm.localToken).toBe(false);
    expect(hsm.pinFile).toBeUndefined();
    let error: unknown;
    try {
      readPin(hsm, {});
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ProvlineError);
    const e = error as ProvlineError;
    expect(e.code).toBe('HSM_PIN_MISSING');
    expect(e.message).toContain(`SOFTHSM2_CONF is exported (${other})`);
    expect(e.message).toContain(pinFile);
    expect(e.message).toContain('PROVLINE_HSM_PIN (not set)');
    expect(e.message).toContain('PROVLINE_HSM_PIN_FILE');
    expect(e.hint).toContain('Unset SOFTHSM2_CONF');
  });

  it('another SOFTHSM2_CONF with the PIN in the environment works as before', () => {
    const { home } = stackHome();
    const hsm = runtimeWith(home, { SOFTHSM2_CONF: '/elsewhere/softhsm2.conf' }).hsm;
    expect(readPin(hsm, { PROVLINE_HSM_PIN: '4321' })).toBe('4321');
  });
});
