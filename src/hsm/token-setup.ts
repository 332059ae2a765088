/**
 * First-time set-up of a token through PKCS#11 itself (C_InitToken, C_InitPIN), so no PIN is
 * ever on a command line (softhsm2-util takes both PINs as options). Used by the local stack
 * (src/stack/softhsm.ts), which owns the files, the PINs and the retries around these calls.
 *
 * Each call loads the library on its own with SOFTHSM2_CONF (or the vendor's equivalent) set
 * for the call only: C_Initialize reads it, and it is put back afterwards.
 */
import pkcs11js from 'pkcs11js';
import { tokenLabel } from './uri.js';

export interface TokenLibrary {
  /** Path of the PKCS#11 library. */
  module: string;
  /** SoftHSM's config file for this token directory. */
  softhsm2Conf: string;
}

export type TokenSetupState = 'absent' | 'no-user-pin' | 'ready';

/** Runs `fn` with the library loaded and initialised against `lib.softhsm2Conf`. */
function withLibrary<T>(lib: TokenLibrary, fn: (p: pkcs11js.PKCS11) => T): T {
  const saved = process.env.SOFTHSM2_CONF;
  process.env.SOFTHSM2_CONF = lib.softhsm2Conf;
  const p = new pkcs11js.PKCS11();
  try {
    p.load(lib.module);
    p.C_Initialize();
    try {
      return fn(p);
    } finally {
      p.C_Finalize();
    }
  } finally {
    p.close();
    if (saved === undefined) delete process.env.SOFTHSM2_CONF;
    else process.env.SOFTHSM2_CONF = saved;
  }
}

function findSlot(p: pkcs11js.PKCS11, label: string): Buffer | undefined {
  return p.C_GetSlotList(true).find((slot) => tokenLabel(p.C_GetTokenInfo(slot).label) === label);
}

/** Whether the library shows a token labelled `label`, and whether its user PIN is set. */
export function tokenSetupState(lib: TokenLibrary, label: string): TokenSetupState {
  return withLibrary(lib, (p) => {
    const slot = findSlot(p, label);
    if (slot === undefined) return 'absent';
    return p.C_GetTokenInfo(slot).flags & pkcs11js.CKF_USER_PIN_INITIALIZED ? 'ready' : 'no-user-pin';
  });
}

export type InitOutcome = 'initialised' | 'pin-set' | 'no-free-slot';

/**
 * Initialises a token labelled `label` in a free slot (unless `existing` says it is there
 * already), then sets its user PIN. PINs are passed in memory only.
 */
export function initTokenAndPin(
  lib: TokenLibrary,
  req: { label: string; soPin: string; userPin: string; existing: boolean },
): InitOutcome {
  return withLibrary(lib, (p) => {
    let slot = findSlot(p, req.label);
    let outcome: InitOutcome = 'pin-set';
    if (slot === undefined) {
      if (req.existing) throw new Error('the token is on disk but the library does not show it');
      const free = p
        .C_GetSlotList(true)
        .find((s) => (p.C_GetTokenInfo(s).flags & pkcs11js.CKF_TOKEN_INITIALIZED) === 0);
      if (free === undefined) return 'no-free-slot';
      // PKCS#11 labels are 32 bytes padded with spaces; pkcs11js would pad with NULs.
      p.C_InitToken(free, req.soPin, req.label.padEnd(32, ' '));
      slot = free;
      outcome = 'initialised';
    }
    const session = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    try {
      p.C_Login(session, pkcs11js.CKU_SO, req.soPin);
      p.C_InitPIN(session, req.userPin);
      p.C_Logout(session);
    } finally {
      p.C_CloseSession(session);
    }
    return outcome;
  });
}
