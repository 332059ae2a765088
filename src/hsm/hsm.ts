/**
 * The HSM as the rest of provline sees it. The batch pipeline (BullMQ workers) calls:
 *
 *   const hsm = await openHsm(runtime.hsm);
 *   const id = await hsm.createDeviceIdentity({ serial, thingName, keyType, kekLabel, subject });
 *   …
 *   hsm.close();
 *
 * openHsm loads the module (one C_Initialize per process), picks the token by label or URI,
 * reads the PIN and logs in (so a wrong PIN fails here, not at the first device), and sizes the
 * session pool from `hsm.sessions` and the token's limit. KEK handles are looked up once per
 * label and cached: no C_FindObjects on the hot path.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { KeyType, HsmSettings } from '../config/index.js';
import {
  createCertifiedIdentityOn,
  createIdentityOn,
  type CertifiedIdentity,
  type DeviceIdentity,
  type DeviceIdentityRequest,
} from './identity.js';
import { findKek, generateKek, importKek, type KekRef } from './kek.js';
import { Pkcs11Module, type ModuleInfo } from './module.js';
import { asyncOps, hybridOps, syncOps, withLatency, type KeyOps } from './ops.js';
import { readPin } from './pin.js';
import { SessionPool } from './pool.js';
import { KEY_TYPE_SPECS } from './key-types.js';
import type { Session } from './session.js';
import type { MechanismSupport, Token, TokenInfo } from './token.js';
import { unwrapOn, type UnwrapRequest } from './unwrap.js';
import { ProvlineError } from '../core/index.js';

/**
 * How hot-path calls run. `auto` (the default) is what `provline hsm bench` measured fastest
 * on SoftHSM: the blocking calls for EC keys (each well under a millisecond), the threadpool
 * for RSA keys (keygen ~200 ms must not block the event loop). Use `async` for network HSMs.
 */
export type CallMode = 'auto' | 'sync' | 'async' | 'hybrid';

export interface OpenHsmOptions {
  mode?: CallMode;
  /** Overrides settings.sessions (benchmarks). */
  sessions?: number;
  /** Simulated per-call latency in ms (benchmarks of latency-bound HSMs only). */
  simulatedLatencyMs?: number;
  env?: NodeJS.ProcessEnv;
}

export interface HsmInfo {
  module: ModuleInfo;
  token: TokenInfo;
  /** The PKCS#11 URI provline uses for the token. */
  tokenUri: string;
  sessions: { configured: number; pool: number; tokenMaxRw: number | null };
  mechanisms: MechanismSupport[];
}

export interface KekInfo {
  label: string;
  uri: string;
  persistent: boolean;
}

export class Hsm {
  private readonly keks = new Map<string, KekRef>();
  private closed = false;

  constructor(
    readonly module: Pkcs11Module,
    readonly token: Token,
    readonly pool: SessionPool,
    private readonly settings: HsmSettings,
    private readonly mode: CallMode,
    private readonly latencyMs: number,
  ) {}

  readonly tokenLabel = (): string => this.token.label;

  info(): HsmInfo {
    // C_GetTokenInfo can hit a token file that another process is rewriting (SoftHSM): the
    // same transient failure openHsm rides through, so a few retries with a short pause.
    let token: TokenInfo;
    for (let attempt = 1; ; attempt++) {
      try {
        token = this.token.info();
        break;
      } catch (e) {
        if (attempt >= OPEN_ATTEMPTS || !(e instanceof ProvlineError) || !TRANSIENT_AT_OPEN.has(e.code))
          throw e;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 25 * attempt);
      }
    }
    return {
      module: this.module.info(),
      token,
      tokenUri: `pkcs11:token=${encodeURIComponent(token.label)}`,
      sessions: {
        configured: this.settings.sessions,
        pool: this.pool.size,
        tokenMaxRw: token.maxRwSessions ?? null,
      },
      mechanisms: this.token.mechanisms(),
    };
  }

  /** The call implementation for a key type (see CallMode). */
  opsFor(keyType: KeyType): KeyOps {
    const base =
      this.mode === 'sync'
        ? syncOps
        : this.mode === 'async'
          ? asyncOps
          : this.mode === 'hybrid'
            ? hybridOps
            : KEY_TYPE_SPECS[keyType].family === 'rsa'
              ? asyncOps
              : syncOps;
    return this.latencyMs > 0 ? withLatency(base, this.latencyMs) : base;
  }

  /** Key pair + CSR + wrapped export, with the key objects destroyed afterwards. */
  async createDeviceIdentity(req: DeviceIdentityRequest): Promise<DeviceIdentity> {
    const ops = this.opsFor(req.keyType);
    return this.withKek(req.kekLabel, (s, kek) => createIdentityOn(s, ops, kek, req));
  }

  /**
   * Key pair + a certificate `certify` issues for it on the same session (the factory CA's key
   * is on this token) + wrapped export, with the key objects destroyed afterwards.
   */
  async createCertifiedIdentity(
    req: DeviceIdentityRequest,
    certify: (s: Session, spki: Buffer) => Promise<Buffer>,
  ): Promise<CertifiedIdentity> {
    const ops = this.opsFor(req.keyType);
    return this.withKek(req.kekLabel, (s, kek) => createCertifiedIdentityOn(s, ops, kek, req, certify));
  }

  /** Runs `fn` on a pooled session with the KEK labelled `label` (looked up once). */
  private async withKek<T>(label: string, fn: (s: Session, kek: KekRef) => Promise<T>): Promise<T> {
    return this.pool.withSession(async (s) => {
      const kek = this.kek(s, label);
      try {
        return await fn(s, kek);
      } catch (e) {
        // A KEK deleted under us invalidates the cached handle: look it up again next time.
        if (e instanceof ProvlineError && e.code === 'HSM_OBJECT_GONE') this.keks.delete(label);
        throw e;
      }
    });
  }

  /** Looks the KEK up (once), or undefined. */
  async findKek(label: string): Promise<KekInfo | undefined> {
    return this.pool.withSession((s) => {
      const k = this.keks.get(label) ?? findKek(s, this.token.label, label);
      if (k) this.keks.set(label, k);
      return k && kekInfo(k);
    });
  }

  /** Generates an AES-256 KEK in the HSM. `persistent: false` makes a session key (benchmarks). */
  async createKek(req: { label: string; persistent?: boolean }): Promise<KekInfo> {
    return this.pool.withSession((s) => {
      const k = generateKek(s, this.token.label, req.label, req.persistent ?? true);
      this.keks.set(req.label, k);
      return kekInfo(k);
    });
  }

  /** Imports a known AES-256 value as a KEK. */
  async importKek(req: { label: string; value: Buffer; persistent?: boolean }): Promise<KekInfo> {
    return this.pool.withSession((s) => {
      const k = importKek(s, this.token.label, req.label, req.value, req.persistent ?? true);
      this.keks.set(req.label, k);
      return kekInfo(k);
    });
  }

  /**
   * Unwraps a device key through the HSM to exact PKCS#8 DER, in memory only (for `plain` key
   * delivery at the station). Never write the result to disk, logs or job data.
   */
  async unwrapToPkcs8(req: UnwrapRequest): Promise<Buffer> {
    return this.pool.withSession((s) => unwrapOn(s, this.kek(s, req.kekLabel), req));
  }

  /** Closes the sessions and releases the module. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.pool.close();
    } finally {
      this.module.release();
    }
  }

  private kek(s: Parameters<typeof findKek>[0], label: string): KekRef {
    let k = this.keks.get(label);
    if (!k) {
      k = findKek(s, this.token.label, label);
      if (!k) {
        throw new ProvlineError(
          'HSM_KEK_NOT_FOUND',
          `no transport KEK labelled "${label}" on token "${this.token.label}"`,
          {
            kind: 'invalid-input',
            hint: 'Create it with `provline hsm kek create --profile <p>` or import the agreed key with `provline hsm kek import`.',
            details: { kekLabel: label },
          },
        );
      }
      this.keks.set(label, k);
    }
    return k;
  }
}

function kekInfo(k: KekRef): KekInfo {
  return { label: k.label, uri: k.uri, persistent: k.persistent };
}

/**
 * Failures that a second attempt at opening can cure. SoftHSM's file store shows them when
 * several processes open one token at once: a token file being rewritten by another process
 * reads as no token, or as CKR_GENERAL_ERROR, for a moment. Network HSMs have their own
 * transient failures. A wrong PIN is never retried (it would count towards a lockout).
 */
const TRANSIENT_AT_OPEN = new Set([
  'HSM_TOKEN_NOT_FOUND',
  'HSM_GENERAL_ERROR',
  'HSM_TOKEN_NOT_PRESENT',
  'HSM_DEVICE_ERROR',
  'HSM_FUNCTION_FAILED',
]);
const OPEN_ATTEMPTS = 5;

/** Opens the configured HSM: module, token, login, session pool (with retries, see above). */
export async function openHsm(settings: HsmSettings, options: OpenHsmOptions = {}): Promise<Hsm> {
  for (let attempt = 1; ; attempt++) {
    try {
      return openOnce(settings, options);
    } catch (e) {
      if (attempt >= OPEN_ATTEMPTS || !(e instanceof ProvlineError) || !TRANSIENT_AT_OPEN.has(e.code))
        throw e;
      await sleep(50 * 2 ** (attempt - 1));
    }
  }
}

function openOnce(settings: HsmSettings, options: OpenHsmOptions): Hsm {
  const module = Pkcs11Module.open(settings.module, settings.softhsm2Conf);
  try {
    const token = module.findToken(settings.token);
    const env = options.env ?? process.env;
    const pool = new SessionPool(token, options.sessions ?? settings.sessions, (s) =>
      s.login(readPin(settings, env)),
    );
    pool.prime();
    return new Hsm(module, token, pool, settings, options.mode ?? 'auto', options.simulatedLatencyMs ?? 0);
  } catch (e) {
    module.release();
    throw e;
  }
}
