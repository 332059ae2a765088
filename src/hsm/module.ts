/**
 * A loaded PKCS#11 module: the top of the hierarchy (module → token → session → objects).
 *
 * One C_Initialize per process and module path, with CKF_OS_LOCKING_OK so the module's own
 * locking protects calls from the libuv threadpool (the *Async forms). Opens are reference
 * counted; the last release finalizes and unloads. SoftHSM reads SOFTHSM2_CONF at C_Initialize,
 * so a caller that names a config gets it set first (and it must agree with a module that is
 * already initialised: one process, one token store).
 */
import { existsSync } from 'node:fs';
import pkcs11js from 'pkcs11js';
import { ProvlineError } from '../core/index.js';
import { hsmError } from './errors.js';
import { Token } from './token.js';
import { isPkcs11Uri, parsePkcs11Uri, tokenLabel, type Pkcs11Uri } from './uri.js';

export interface ModuleInfo {
  path: string;
  manufacturer: string;
  description: string;
  cryptokiVersion: string;
  libraryVersion: string;
}

interface Loaded {
  module: Pkcs11Module;
  refs: number;
  softhsm2Conf: string | undefined;
}

const loaded = new Map<string, Loaded>();

export class Pkcs11Module {
  private constructor(
    readonly path: string,
    /** The pkcs11js binding; only src/hsm touches it. */
    readonly p: pkcs11js.PKCS11,
  ) {}

  /** Loads and initialises `path` (or takes another reference to it). */
  static open(path: string, softhsm2Conf?: string): Pkcs11Module {
    const existing = loaded.get(path);
    if (existing) {
      if (
        softhsm2Conf !== undefined &&
        existing.softhsm2Conf !== undefined &&
        softhsm2Conf !== existing.softhsm2Conf
      ) {
        throw new ProvlineError(
          'HSM_MODULE_CONFLICT',
          'this process already uses the PKCS#11 module with another SOFTHSM2_CONF',
          {
            details: { module: path },
          },
        );
      }
      existing.refs++;
      return existing.module;
    }
    if (!existsSync(path)) {
      throw new ProvlineError('HSM_MODULE_NOT_FOUND', `PKCS#11 module not found: ${path}`, {
        kind: 'invalid-input',
        hint: 'Set hsm.module (PROVLINE_HSM_MODULE) to the vendor library, e.g. /usr/lib/softhsm/libsofthsm2.so.',
      });
    }
    if (softhsm2Conf !== undefined) process.env.SOFTHSM2_CONF = softhsm2Conf;
    const p = new pkcs11js.PKCS11();
    try {
      p.load(path);
    } catch (e) {
      throw new ProvlineError('HSM_MODULE_LOAD_FAILED', `cannot load the PKCS#11 module ${path}`, {
        kind: 'invalid-input',
        cause: e,
        details: { module: path },
      });
    }
    try {
      p.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    } catch (e) {
      p.close();
      throw hsmError(e, 'initialising the PKCS#11 module');
    }
    const module = new Pkcs11Module(path, p);
    loaded.set(path, { module, refs: 1, softhsm2Conf });
    return module;
  }

  /** Drops one reference; the last one finalizes the module (closing every session). */
  release(): void {
    const entry = loaded.get(this.path);
    if (!entry || entry.module !== this) return;
    if (--entry.refs > 0) return;
    loaded.delete(this.path);
    try {
      this.p.C_Finalize();
    } finally {
      this.p.close();
    }
  }

  info(): ModuleInfo {
    const i = this.p.C_GetInfo();
    return {
      path: this.path,
      manufacturer: tokenLabel(i.manufacturerID),
      description: tokenLabel(i.libraryDescription),
      cryptokiVersion: `${i.cryptokiVersion.major}.${i.cryptokiVersion.minor}`,
      libraryVersion: `${i.libraryVersion.major}.${i.libraryVersion.minor}`,
    };
  }

  /** Every slot with an initialised token, as Token objects (SoftHSM always adds an empty one). */
  tokens(): Token[] {
    try {
      return this.p
        .C_GetSlotList(true)
        .map((slot) => new Token(this, slot))
        .filter((t) => t.info().initialized);
    } catch (e) {
      throw hsmError(e, 'listing the HSM slots');
    }
  }

  /**
   * The token named by a label or an RFC 7512 URI (`pkcs11:token=provline`). Exactly one token
   * must match; never slot 0 by default (SoftHSM moves initialised tokens to random slot ids).
   */
  findToken(selector: string): Token {
    const want: Pkcs11Uri = isPkcs11Uri(selector) ? parsePkcs11Uri(selector) : { token: selector };
    const all = this.tokens();
    const matches = all.filter((t) => t.matches(want));
    if (matches.length === 1) return matches[0]!;
    const labels = all.map((t) => `"${t.label}"`).join(', ') || '(none)';
    if (matches.length === 0) {
      throw new ProvlineError('HSM_TOKEN_NOT_FOUND', `no HSM token matches ${JSON.stringify(selector)}`, {
        kind: 'failed',
        hint: `Tokens seen by ${this.path}: ${labels}. Set hsm.token (PROVLINE_HSM_TOKEN), or run \`provline stack up\` for the local SoftHSM token.`,
        details: { token: selector, available: all.map((t) => t.label) },
      });
    }
    throw new ProvlineError(
      'HSM_TOKEN_AMBIGUOUS',
      `${matches.length} HSM tokens match ${JSON.stringify(selector)}`,
      {
        kind: 'invalid-input',
        hint: 'Narrow hsm.token with a URI: pkcs11:token=<label>;serial=<serial>.',
        details: { token: selector },
      },
    );
  }
}
