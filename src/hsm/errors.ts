/**
 * The one mapping table from PKCS#11 return values (CKR_*) to provline's typed errors.
 *
 * pkcs11js throws a Pkcs11Error carrying the numeric `code` and the failing `method`; we branch
 * on the number, never on the message. Every HSM failure that leaves src/hsm is a
 * ProvlineError with an HSM_* code, a retryable flag (workers stop retrying the others) and the
 * original error as `cause`. Messages never contain PINs: pkcs11js messages are only the CKR
 * name, and the operation names we add are constants.
 */
import { createPrivateKey } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import { ProvlineError, type ErrorCode, type ErrorKind } from '../core/index.js';

interface CkrRule {
  code: ErrorCode;
  message: string;
  retryable: boolean;
  kind?: ErrorKind;
  hint?: string;
}

const PIN_HINT = 'Check the pin file (hsm.pinFile) or the PIN environment variable (hsm.pinEnv).';

const rules = new Map<number, CkrRule>();
function rule(ckrs: number[], r: CkrRule): void {
  for (const ckr of ckrs) rules.set(ckr, r);
}

rule([pkcs11js.CKR_PIN_INCORRECT], {
  code: 'HSM_PIN_INCORRECT',
  message: 'the HSM rejected the PIN',
  retryable: false,
  kind: 'invalid-input',
  hint: PIN_HINT,
});
rule([pkcs11js.CKR_PIN_INVALID, pkcs11js.CKR_PIN_LEN_RANGE], {
  code: 'HSM_PIN_INVALID',
  message: 'the PIN has an invalid format or length for this token',
  retryable: false,
  kind: 'invalid-input',
  hint: PIN_HINT,
});
rule([pkcs11js.CKR_PIN_LOCKED], {
  code: 'HSM_PIN_LOCKED',
  message: 'the user PIN is locked on this token',
  retryable: false,
  hint: 'The security officer must unlock or reset the user PIN.',
});
rule([pkcs11js.CKR_PIN_EXPIRED], {
  code: 'HSM_PIN_EXPIRED',
  message: 'the user PIN has expired',
  retryable: false,
  hint: 'Set a new user PIN on the token.',
});
rule([pkcs11js.CKR_USER_PIN_NOT_INITIALIZED], {
  code: 'HSM_TOKEN_NOT_READY',
  message: 'the token has no user PIN yet',
  retryable: false,
  hint: 'Initialise the user PIN (the local stack does this in `provline stack up`).',
});
rule([pkcs11js.CKR_USER_NOT_LOGGED_IN], {
  code: 'HSM_NOT_LOGGED_IN',
  message: 'the HSM session is not logged in',
  retryable: true,
});
rule([pkcs11js.CKR_USER_TYPE_INVALID, pkcs11js.CKR_USER_ANOTHER_ALREADY_LOGGED_IN], {
  code: 'HSM_LOGIN_CONFLICT',
  message: 'another user type is logged in to the token',
  retryable: false,
});
rule([pkcs11js.CKR_SLOT_ID_INVALID, pkcs11js.CKR_TOKEN_NOT_RECOGNIZED], {
  code: 'HSM_TOKEN_NOT_FOUND',
  message: 'the HSM slot or token is not known to the module',
  retryable: false,
  kind: 'invalid-input',
});
rule([pkcs11js.CKR_TOKEN_NOT_PRESENT, pkcs11js.CKR_DEVICE_REMOVED], {
  code: 'HSM_TOKEN_NOT_PRESENT',
  message: 'the HSM token went away',
  retryable: true,
});
rule([pkcs11js.CKR_DEVICE_ERROR, pkcs11js.CKR_DEVICE_MEMORY], {
  code: 'HSM_DEVICE_ERROR',
  message: 'the HSM reported a device error',
  retryable: true,
});
rule([pkcs11js.CKR_HOST_MEMORY], {
  code: 'HSM_HOST_MEMORY',
  message: 'the PKCS#11 module ran out of host memory',
  retryable: true,
});
rule([pkcs11js.CKR_FUNCTION_FAILED, pkcs11js.CKR_FUNCTION_CANCELED], {
  code: 'HSM_FUNCTION_FAILED',
  message: 'the HSM operation failed',
  retryable: true,
});
rule([pkcs11js.CKR_GENERAL_ERROR], {
  code: 'HSM_GENERAL_ERROR',
  message: 'the PKCS#11 module reported a general error',
  retryable: false,
});
rule([pkcs11js.CKR_SESSION_HANDLE_INVALID, pkcs11js.CKR_SESSION_CLOSED], {
  code: 'HSM_SESSION_LOST',
  message: 'the HSM session was closed under us',
  retryable: true,
});
rule([pkcs11js.CKR_SESSION_COUNT], {
  code: 'HSM_SESSION_LIMIT',
  message: 'the token refuses more sessions',
  retryable: true,
  hint: 'Lower hsm.sessions.',
});
rule([pkcs11js.CKR_SESSION_READ_ONLY, pkcs11js.CKR_TOKEN_WRITE_PROTECTED], {
  code: 'HSM_TOKEN_READ_ONLY',
  message: 'the token or session is read-only',
  retryable: false,
});
rule([pkcs11js.CKR_OPERATION_ACTIVE], {
  code: 'HSM_OPERATION_ACTIVE',
  message: 'another operation is active on the session',
  retryable: true,
});
rule([pkcs11js.CKR_MECHANISM_INVALID, pkcs11js.CKR_MECHANISM_PARAM_INVALID], {
  code: 'HSM_MECHANISM_UNSUPPORTED',
  message: 'the token does not support a required mechanism',
  retryable: false,
  hint: 'Run `provline hsm info` to see which mechanisms the token offers.',
});
rule([pkcs11js.CKR_KEY_HANDLE_INVALID, pkcs11js.CKR_OBJECT_HANDLE_INVALID], {
  code: 'HSM_OBJECT_GONE',
  message: 'an HSM key or object no longer exists',
  retryable: true,
});
rule([pkcs11js.CKR_ATTRIBUTE_SENSITIVE], {
  code: 'HSM_ATTRIBUTE_SENSITIVE',
  message: 'the HSM refuses to reveal a sensitive attribute',
  retryable: false,
});
rule([pkcs11js.CKR_KEY_UNEXTRACTABLE, pkcs11js.CKR_KEY_NOT_WRAPPABLE], {
  code: 'HSM_KEY_NOT_EXPORTABLE',
  message: 'the key may not be exported from the HSM',
  retryable: false,
});
rule([pkcs11js.CKR_KEY_FUNCTION_NOT_PERMITTED, pkcs11js.CKR_KEY_TYPE_INCONSISTENT], {
  code: 'HSM_KEY_USAGE_DENIED',
  message: 'the key is not allowed for this operation',
  retryable: false,
});
// A KEK handle that went invalid (key deleted, module restarted) is retryable: the retry looks
// the label up again and then fails for good with HSM_KEK_NOT_FOUND if the key is really gone.
rule([pkcs11js.CKR_WRAPPING_KEY_HANDLE_INVALID, pkcs11js.CKR_UNWRAPPING_KEY_HANDLE_INVALID], {
  code: 'HSM_OBJECT_GONE',
  message: 'the transport KEK no longer exists under its cached handle',
  retryable: true,
});
rule([pkcs11js.CKR_WRAPPING_KEY_SIZE_RANGE, pkcs11js.CKR_WRAPPING_KEY_TYPE_INCONSISTENT], {
  code: 'HSM_KEK_INVALID',
  message: 'the transport KEK cannot wrap this key',
  retryable: false,
  kind: 'invalid-input',
});
rule([pkcs11js.CKR_UNWRAPPING_KEY_SIZE_RANGE, pkcs11js.CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT], {
  code: 'HSM_KEK_INVALID',
  message: 'the transport KEK cannot unwrap this key',
  retryable: false,
  kind: 'invalid-input',
});
rule(
  [
    pkcs11js.CKR_WRAPPED_KEY_INVALID,
    pkcs11js.CKR_WRAPPED_KEY_LEN_RANGE,
    pkcs11js.CKR_ENCRYPTED_DATA_INVALID,
    pkcs11js.CKR_ENCRYPTED_DATA_LEN_RANGE,
  ],
  {
    code: 'HSM_WRAPPED_KEY_INVALID',
    message: 'the wrapped key does not unwrap under this KEK',
    retryable: false,
    kind: 'invalid-input',
  },
);
rule(
  [
    pkcs11js.CKR_TEMPLATE_INCOMPLETE,
    pkcs11js.CKR_TEMPLATE_INCONSISTENT,
    pkcs11js.CKR_ATTRIBUTE_VALUE_INVALID,
    pkcs11js.CKR_ATTRIBUTE_TYPE_INVALID,
    pkcs11js.CKR_ATTRIBUTE_READ_ONLY,
    pkcs11js.CKR_DOMAIN_PARAMS_INVALID,
    pkcs11js.CKR_KEY_SIZE_RANGE,
    0x140 /* CKR_CURVE_NOT_SUPPORTED, not exported by pkcs11js */,
  ],
  {
    code: 'HSM_TEMPLATE_REJECTED',
    message: 'the token rejected the key attributes provline asked for',
    retryable: false,
  },
);
rule([pkcs11js.CKR_CRYPTOKI_NOT_INITIALIZED, pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED], {
  code: 'HSM_MODULE_STATE',
  message: 'the PKCS#11 module is in an unexpected initialisation state',
  retryable: false,
});
rule(
  [
    pkcs11js.CKR_DATA_LEN_RANGE,
    pkcs11js.CKR_DATA_INVALID,
    pkcs11js.CKR_BUFFER_TOO_SMALL,
    pkcs11js.CKR_ARGUMENTS_BAD,
  ],
  { code: 'HSM_INTERNAL', message: 'provline passed the HSM bad arguments (a bug)', retryable: false },
);

const ckrNames = new Map<number, string>();
for (const [name, value] of Object.entries(pkcs11js)) {
  if (name.startsWith('CKR_') && typeof value === 'number' && !ckrNames.has(value)) ckrNames.set(value, name);
}

/** `CKR_PIN_INCORRECT` for 0xA0, or the hex value for vendor codes. */
export function ckrName(code: number): string {
  return ckrNames.get(code) ?? `0x${code.toString(16).toUpperCase()}`;
}

/** True for anything pkcs11js throws for a CKR_* return value. */
export function isPkcs11Error(e: unknown): e is pkcs11js.Pkcs11Error {
  return e instanceof pkcs11js.Pkcs11Error;
}

/** True when `e` is a Pkcs11Error with this CKR code. */
export function hasCkr(e: unknown, code: number): boolean {
  return isPkcs11Error(e) && e.code === code;
}

/**
 * Turns whatever a PKCS#11 call threw into a ProvlineError. `operation` is a constant phrase
 * ("generating the device key"); the CKR name and pkcs11js method go into `details`.
 */
export function hsmError(e: unknown, operation: string): ProvlineError {
  if (e instanceof ProvlineError) return e;
  if (isPkcs11Error(e)) {
    drainOpenSslErrors();
    const r = rules.get(e.code);
    const details = { ckr: ckrName(e.code), method: e.method, operation };
    if (r) {
      return new ProvlineError(r.code, `${operation}: ${r.message} (${details.ckr})`, {
        kind: r.kind ?? 'failed',
        retryable: r.retryable,
        hint: r.hint,
        details,
        cause: e,
      });
    }
    return new ProvlineError(
      'HSM_CKR_UNEXPECTED',
      `${operation}: the PKCS#11 module returned ${details.ckr}`,
      { retryable: false, details, cause: e },
    );
  }
  const message = e instanceof Error ? e.message : String(e);
  return new ProvlineError('HSM_FAILED', `${operation}: ${message}`, {
    retryable: false,
    details: { operation },
    cause: e,
  });
}

// A valid Ed25519 PKCS#8 key (all-zero seed), used only to make OpenSSL report its error queue.
const PROBE_KEY = Buffer.from(`302e020100300506032b657004220420${'00'.repeat(32)}`, 'hex');

/**
 * SoftHSM runs OpenSSL inside this process. When one of its operations fails (a wrong KEK on
 * unwrap, for instance) it leaves the error on the calling thread's OpenSSL error queue, and
 * Node's NEXT unrelated crypto call on that thread throws it ("Provider routines::cipher
 * operation failed" from createPrivateKey on a valid key). After any failed PKCS#11 call we make
 * one throwaway crypto call, which reports and clears the queue. Failures of *Async calls leave
 * their error on a libuv threadpool thread, which this cannot reach (docs/hsm.md).
 */
export function drainOpenSslErrors(): void {
  try {
    createPrivateKey({ key: PROBE_KEY, format: 'der', type: 'pkcs8' });
  } catch {
    // The stale error surfaced here and is gone now.
  }
}
