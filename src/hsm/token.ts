/** A token in a slot: its identity, limits and mechanisms, and where sessions come from. */
import pkcs11js from 'pkcs11js';
import { hsmError } from './errors.js';
import { Session } from './session.js';
import { tokenLabel, type Pkcs11Uri } from './uri.js';

export interface TokenInfo {
  label: string;
  manufacturer: string;
  model: string;
  serial: string;
  slotId: string;
  initialized: boolean;
  userPinInitialized: boolean;
  loginRequired: boolean;
  /** undefined when the token states no limit (CK_EFFECTIVELY_INFINITE or unavailable). */
  maxSessions: number | undefined;
  maxRwSessions: number | undefined;
}

/** The mechanisms provline relies on, with why. */
export const MECHANISMS_THAT_MATTER: Array<{ name: string; mechanism: number; usedFor: string }> = [
  {
    name: 'CKM_EC_KEY_PAIR_GEN',
    mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN,
    usedFor: 'P-256 / P-384 device keys',
  },
  {
    name: 'CKM_ECDSA',
    mechanism: pkcs11js.CKM_ECDSA,
    usedFor: 'signing EC CSRs (hash computed in provline)',
  },
  {
    name: 'CKM_RSA_PKCS_KEY_PAIR_GEN',
    mechanism: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN,
    usedFor: 'RSA-2048 device keys',
  },
  {
    name: 'CKM_RSA_PKCS',
    mechanism: pkcs11js.CKM_RSA_PKCS,
    usedFor: 'signing RSA CSRs (DigestInfo built in provline)',
  },
  { name: 'CKM_AES_KEY_GEN', mechanism: pkcs11js.CKM_AES_KEY_GEN, usedFor: '`hsm kek create`' },
  {
    name: 'CKM_AES_KEY_WRAP_PAD',
    mechanism: pkcs11js.CKM_AES_KEY_WRAP_PAD,
    usedFor: 'exporting device keys wrapped (RFC 5649)',
  },
  {
    name: 'CKM_ECDSA_SHA256',
    mechanism: pkcs11js.CKM_ECDSA_SHA256,
    usedFor: 'not needed (provline hashes itself); listed for comparison',
  },
];

export interface MechanismSupport {
  name: string;
  supported: boolean;
  usedFor: string;
  minKeySize?: number;
  maxKeySize?: number;
}

/** CK_EFFECTIVELY_INFINITE (0) and CK_UNAVAILABLE_INFORMATION (~0) both mean "no stated limit". */
function limit(n: number): number | undefined {
  return n === 0 || n >= 0xffffffff ? undefined : n;
}

/** What a token needs of its module: the loaded library (module.ts implements it). */
export interface ModuleHandle {
  readonly p: pkcs11js.PKCS11;
}

export class Token {
  constructor(
    readonly module: ModuleHandle,
    readonly slot: Buffer,
  ) {}

  private raw(): pkcs11js.TokenInfo {
    try {
      return this.module.p.C_GetTokenInfo(this.slot);
    } catch (e) {
      throw hsmError(e, 'reading the token information');
    }
  }

  get label(): string {
    return tokenLabel(this.raw().label);
  }

  info(): TokenInfo {
    const i = this.raw();
    return {
      label: tokenLabel(i.label),
      manufacturer: tokenLabel(i.manufacturerID),
      model: tokenLabel(i.model),
      serial: tokenLabel(i.serialNumber),
      slotId: this.slotId(),
      initialized: (i.flags & pkcs11js.CKF_TOKEN_INITIALIZED) !== 0,
      userPinInitialized: (i.flags & pkcs11js.CKF_USER_PIN_INITIALIZED) !== 0,
      loginRequired: (i.flags & pkcs11js.CKF_LOGIN_REQUIRED) !== 0,
      maxSessions: limit(i.maxSessionCount),
      maxRwSessions: limit(i.maxRwSessionCount),
    };
  }

  /** The slot id as a decimal string (pkcs11js hands slot ids over as little-endian buffers). */
  slotId(): string {
    return this.slot.length >= 8
      ? this.slot.readBigUInt64LE(0).toString()
      : String(this.slot.readUInt32LE(0));
  }

  /** RFC 7512 matching: every attribute the URI gives must be equal. */
  matches(u: Pkcs11Uri): boolean {
    const i = this.info();
    if (u.token !== undefined && u.token !== i.label) return false;
    if (u.manufacturer !== undefined && u.manufacturer !== i.manufacturer) return false;
    if (u.model !== undefined && u.model !== i.model) return false;
    if (u.serial !== undefined && u.serial !== i.serial) return false;
    if (u.slotId !== undefined && String(u.slotId) !== i.slotId) return false;
    return true;
  }

  mechanisms(): MechanismSupport[] {
    let list: number[];
    try {
      list = this.module.p.C_GetMechanismList(this.slot);
    } catch (e) {
      throw hsmError(e, 'listing the token mechanisms');
    }
    return MECHANISMS_THAT_MATTER.map(({ name, mechanism, usedFor }) => {
      if (!list.includes(mechanism)) return { name, supported: false, usedFor };
      const mi = this.module.p.C_GetMechanismInfo(this.slot, mechanism);
      return { name, supported: true, usedFor, minKeySize: mi.minKeySize, maxKeySize: mi.maxKeySize };
    });
  }

  /** A new read/write session. Owned by the caller (normally the SessionPool). */
  openSession(): Session {
    try {
      const handle = this.module.p.C_OpenSession(
        this.slot,
        pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION,
      );
      return new Session(this.module.p, handle);
    } catch (e) {
      throw hsmError(e, 'opening an HSM session');
    }
  }
}
