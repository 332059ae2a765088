/**
 * The PKCS#11 calls on the device-key hot path, behind one small interface with two equal
 * implementations:
 *
 * - `syncOps` calls the blocking forms on the event loop. SoftHSM's P-256 keygen, sign and wrap
 *   each take 0.05–0.2 ms, less than the cost of a threadpool round trip, so this is the fastest
 *   for cheap operations (stack-notes.md §2; `provline hsm bench` re-measures it).
 * - `asyncOps` uses pkcs11js' *Async forms, which run on the libuv threadpool: the event loop
 *   stays free during slow calls (RSA keygen takes ~200 ms; a network HSM ~ms per call).
 *
 * `withLatency` adds a fixed delay after each call, to simulate a network HSM in benchmarks.
 * C_SignInit, C_GetAttributeValue and C_DestroyObject have no async form in pkcs11js; on a real
 * network HSM they block the event loop for one round trip each (documented in docs/hsm.md).
 */
import type pkcs11js from 'pkcs11js';
import { setTimeout as sleep } from 'node:timers/promises';

// Output buffers come from Buffer.alloc, never allocUnsafe: pkcs11js writes through the
// buffer's ArrayBuffer, and allocUnsafe hands out slices of a shared pool (keys were seen
// overwriting each other).
type Maybe<T> = T | Promise<T>;

export interface KeyOps {
  readonly name: string;
  generateKeyPair: (
    p: pkcs11js.PKCS11,
    s: Buffer,
    mech: pkcs11js.Mechanism,
    pub: pkcs11js.Template,
    priv: pkcs11js.Template,
  ) => Maybe<pkcs11js.KeyPair>;
  getAttributes: (
    p: pkcs11js.PKCS11,
    s: Buffer,
    object: Buffer,
    template: pkcs11js.Template,
  ) => Maybe<pkcs11js.TemplateResult>;
  sign: (
    p: pkcs11js.PKCS11,
    s: Buffer,
    mech: pkcs11js.Mechanism,
    key: Buffer,
    input: Buffer,
    outLen: number,
  ) => Maybe<Buffer>;
  wrap: (
    p: pkcs11js.PKCS11,
    s: Buffer,
    mech: pkcs11js.Mechanism,
    kek: Buffer,
    key: Buffer,
    outLen: number,
  ) => Maybe<Buffer>;
  destroy: (p: pkcs11js.PKCS11, s: Buffer, object: Buffer) => Maybe<void>;
}

export const syncOps: KeyOps = {
  name: 'sync',
  generateKeyPair: (p, s, mech, pub, priv) => p.C_GenerateKeyPair(s, mech, pub, priv),
  getAttributes: (p, s, object, template) => p.C_GetAttributeValue(s, object, template),
  sign: (p, s, mech, key, input, outLen) => {
    p.C_SignInit(s, mech, key);
    return p.C_Sign(s, input, Buffer.alloc(outLen));
  },
  wrap: (p, s, mech, kek, key, outLen) => p.C_WrapKey(s, mech, kek, key, Buffer.alloc(outLen)),
  destroy: (p, s, object) => p.C_DestroyObject(s, object),
};

export const asyncOps: KeyOps = {
  name: 'async',
  generateKeyPair: (p, s, mech, pub, priv) => p.C_GenerateKeyPairAsync(s, mech, pub, priv),
  getAttributes: (p, s, object, template) => p.C_GetAttributeValue(s, object, template),
  sign: (p, s, mech, key, input, outLen) => {
    p.C_SignInit(s, mech, key);
    return p.C_SignAsync(s, input, Buffer.alloc(outLen));
  },
  wrap: (p, s, mech, kek, key, outLen) => p.C_WrapKeyAsync(s, mech, kek, key, Buffer.alloc(outLen)),
  destroy: (p, s, object) => p.C_DestroyObject(s, object),
};

/**
 * Key generation on the threadpool, everything else blocking: while one lane's keygen (the
 * most expensive call, ~0.1 ms for P-256) runs off-thread, the event loop signs, builds and
 * wraps for another lane, so SoftHSM and provline's own JS overlap on two cores.
 */
export const hybridOps: KeyOps = {
  ...syncOps,
  name: 'hybrid',
  generateKeyPair: asyncOps.generateKeyPair,
};

/** `ops` with `ms` of simulated network round trip after every call (benchmarks only). */
export function withLatency(ops: KeyOps, ms: number): KeyOps {
  const late =
    <A extends unknown[], R>(fn: (...a: A) => Maybe<R>) =>
    async (...a: A): Promise<R> => {
      const r = await fn(...a);
      await sleep(ms);
      return r;
    };
  return {
    name: `${ops.name}+${ms}ms`,
    generateKeyPair: late(ops.generateKeyPair),
    getAttributes: late(ops.getAttributes),
    // SignInit + Sign are two round trips on a network HSM.
    sign: async (...a) => {
      await sleep(ms);
      return late(ops.sign)(...a);
    },
    wrap: late(ops.wrap),
    destroy: late(ops.destroy),
  };
}
