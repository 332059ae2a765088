/**
 * The stack's SoftHSM2 token: a private SOFTHSM2_CONF and token directory under the home, a
 * token labelled `provline`, user and SO PINs generated at init and kept in 0600 pin files.
 *
 * The token is initialised through PKCS#11 itself (C_InitToken, C_InitPIN) so that no PIN
 * ever appears on a command line (softhsm2-util takes both PINs as command-line options).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ProvlineError } from '../core/index.js';
import { initTokenAndPin, tokenSetupState, type TokenLibrary, type TokenSetupState } from '../hsm/index.js';
import type { StackPaths } from './home.js';

export const SOFTHSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';
export const STACK_TOKEN_LABEL = 'provline';

export interface HsmStatus {
  module: string;
  softhsm2Conf: string;
  token: string;
  pinFile: string;
  initialized: boolean;
}

export function hsmStatus(paths: StackPaths): HsmStatus {
  return {
    module: SOFTHSM_MODULE,
    softhsm2Conf: paths.softhsm2Conf,
    token: STACK_TOKEN_LABEL,
    pinFile: paths.userPinFile,
    initialized: existsSync(paths.userPinFile) && tokenState(paths) === 'ready',
  };
}

/** Writes the private SoftHSM config and initialises the token once. Idempotent. */
export function hsmUp(paths: StackPaths): void {
  if (!existsSync(SOFTHSM_MODULE)) {
    throw new ProvlineError(
      'STACK_SOFTHSM_MISSING',
      `SoftHSM2 is not installed (${SOFTHSM_MODULE} not found)`,
      {
        hint: 'Install it: apt-get install softhsm2 (npm test and npm run demo do this for you).',
      },
    );
  }
  mkdirSync(paths.tokenDir, { recursive: true, mode: 0o700 });
  const conf = [
    '# Written by `provline stack up`.',
    `directories.tokendir = ${paths.tokenDir}/`,
    'objectstore.backend = file',
    'log.level = ERROR',
    'slots.removable = false',
    'slots.mechanisms = ALL',
    'library.reset_on_fork = false',
    '',
  ].join('\n');
  if (!existsSync(paths.softhsm2Conf) || readFileSync(paths.softhsm2Conf, 'utf8') !== conf) {
    writeFileSync(`${paths.softhsm2Conf}.tmp`, conf, { mode: 0o600 });
    renameSync(`${paths.softhsm2Conf}.tmp`, paths.softhsm2Conf);
  }

  if (tokenOnDisk(paths)) {
    // The token exists: it is never initialised again, whatever a racing read of it says. Only
    // an init interrupted before the user PIN was set is finished, with the PINs on file.
    if (tokenState(paths) === 'ready') {
      writeFileSync(paths.tokenReadyFile, '');
      return;
    }
    if (!existsSync(paths.soPinFile) || !existsSync(paths.userPinFile)) {
      throw new ProvlineError(
        'STACK_SOFTHSM_FAILED',
        `the SoftHSM token in ${paths.tokenDir} has no user PIN and its PIN files are missing`,
        {
          hint: `Delete ${paths.hsmDir} to start over (this destroys the token's keys).`,
        },
      );
    }
  } else {
    // A new token. The PINs go to disk first, created exclusively: a PIN file that exists is
    // never overwritten (it may belong to a token another process is creating right now).
    createPinFile(paths.soPinFile);
    createPinFile(paths.userPinFile);
  }
  const soPin = readPinFile(paths.soPinFile);
  const userPin = readPinFile(paths.userPinFile);
  // Another process (a worker, a station) may be rewriting the token file right now; SoftHSM
  // then does not list the token for a moment. Look again a few times before giving up.
  for (let attempt = 1; ; attempt++) {
    const visible = setupCall(() => tokenSetupState(library(paths), STACK_TOKEN_LABEL) !== 'absent');
    if (visible || !tokenOnDisk(paths) || attempt >= 20) break;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  }
  const existing = tokenOnDisk(paths);
  const outcome = setupCall(() =>
    initTokenAndPin(library(paths), { label: STACK_TOKEN_LABEL, soPin, userPin, existing }),
  );
  if (outcome === 'no-free-slot')
    throw new ProvlineError('STACK_SOFTHSM_FAILED', 'SoftHSM offers no free slot to initialise');
  writeFileSync(paths.tokenReadyFile, '');
}

/** True when the token directory holds a token (SoftHSM's file store: <dir>/<uuid>/token.object). */
export function tokenOnDisk(paths: StackPaths): boolean {
  if (!existsSync(paths.tokenDir)) return false;
  return readdirSync(paths.tokenDir).some((d) => existsSync(join(paths.tokenDir, d, 'token.object')));
}

function createPinFile(file: string): void {
  try {
    writeFileSync(file, `${randomPin()}\n`, { mode: 0o600, flag: 'wx' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
}

export function readPinFile(file: string): string {
  return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
}

type TokenState = TokenSetupState;

function tokenState(paths: StackPaths): TokenState {
  if (!existsSync(paths.softhsm2Conf)) return 'absent';
  // A token on disk can read as absent for a moment while another process rewrites its file
  // (SoftHSM's file store): look again before believing it.
  for (let attempt = 1; ; attempt++) {
    const state = setupCall(() => tokenSetupState(library(paths), STACK_TOKEN_LABEL));
    if (state !== 'absent' || !tokenOnDisk(paths) || attempt === 5) return state;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50 * attempt);
  }
}

function library(paths: StackPaths): TokenLibrary {
  return { module: SOFTHSM_MODULE, softhsm2Conf: paths.softhsm2Conf };
}

/** A token set-up call, its failures reported as the stack's. */
function setupCall<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ProvlineError) throw e;
    throw new ProvlineError(
      'STACK_SOFTHSM_FAILED',
      `SoftHSM token setup failed: ${e instanceof Error ? e.message : String(e)}`,
      { cause: e },
    );
  }
}

function randomPin(): string {
  // 24 characters from a base32-like alphabet: ~120 bits, printable, no quoting trouble.
  const alphabet = 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789';
  return [...randomBytes(24)].map((b) => alphabet[b & 31]).join('');
}
