/**
 * A simulated Nordic nRF91 modem speaking the AT subset in shared/reference/device-protocols.md
 * A.1: identity, CFUN, CMEE, the %CMNG credential store (hashes over the text exactly as
 * written) and %KEYGEN (a real P-256 key and CSR, with a COSE_Sign1 attestation part signed by
 * the simulated device identity key). Like the modem, it refuses credential work while active.
 * Its command line is its own (nordic-at-wire.ts), read from the reference, not the driver's.
 */
import { createHash, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import type { Category } from './core/faults.js';
import type { DeviceModel } from './core/host.js';
import { generateKeyWithCsr, signMessage } from './core/device-crypto.js';
import {
  CommandLines,
  answer,
  credentialDigest,
  errorResult,
  parseCommand,
  type Param,
} from './nordic-at-wire.js';

export interface NordicSimOptions {
  imei: string;
  firmware?: string;
  model?: string;
  /** Credential slots the store holds before 515 (memory full). */
  capacity?: number;
}

interface Stored {
  content: string;
  sha256: string;
}

const MAX_SEC_TAG = 2147483647;

export class NordicModemModel implements DeviceModel {
  /** AT+CFUN state: 1 active at power-on, 4 offline, 0 minimal. */
  cfun = 1;
  cmee = false;
  /** `<sec_tag>,<type>` → stored credential. */
  readonly store = new Map<string, Stored>();
  private readonly lines = new CommandLines();
  private readonly identityKey: KeyObject;
  private readonly uuid = randomBytes(16);

  constructor(private readonly opts: NordicSimOptions) {
    if (!/^\d{15}$/.test(opts.imei)) throw new Error(`an IMEI is 15 digits, got "${opts.imei}"`);
    this.identityKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  }

  split(chunk: Buffer): Buffer[] {
    return this.lines.push(chunk);
  }

  categorize(command: Buffer): Category {
    const text = command.subarray(0, 24).toString('latin1').toUpperCase();
    if (text.startsWith('AT%CMNG=0')) return 'write';
    if (text.startsWith('AT%CMNG=1') || text.startsWith('AT%CMNG=2')) return 'read';
    if (text.startsWith('AT%KEYGEN')) return 'keygen';
    if (text.startsWith('AT+CGSN') || text.startsWith('AT+CGMR') || text.startsWith('AT+CGMM'))
      return 'identity';
    return 'control';
  }

  rejection(command: Buffer): Buffer | undefined {
    return this.categorize(command) === 'write' ? this.error(527) : undefined;
  }

  handle(command: Buffer): Promise<Buffer | undefined> {
    return this.run(command.toString('latin1'));
  }

  private async run(line: string): Promise<Buffer> {
    const cmd = parseCommand(line);
    if (!cmd) return this.answer([], 'ERROR');
    const { name, usage, params } = cmd;
    const args = params.map((p) => p.text);
    switch (`${name} ${usage}`) {
      case 'AT action':
        return this.answer([]);
      case 'AT+CMEE set':
        if (args[0] !== '0' && args[0] !== '1') return this.answer([], 'ERROR');
        this.cmee = args[0] === '1';
        return this.answer([]);
      case 'AT+CGSN action':
        return this.answer([this.opts.imei]);
      case 'AT+CGMR action':
        return this.answer([this.opts.firmware ?? 'mfw_nrf9160_1.3.5']);
      case 'AT+CGMM action':
        return this.answer([this.opts.model ?? 'nRF9160-SICA']);
      case 'AT+CFUN read':
        return this.answer([`+CFUN: ${this.cfun}`]);
      case 'AT+CFUN set': {
        const n = Number(args[0]);
        if (![0, 1, 4, 20, 21, 30, 31, 40, 41, 44].includes(n)) return this.answer([], 'ERROR');
        this.cfun = n === 0 || n === 4 ? n : n === 1 ? 1 : this.cfun;
        return this.answer([]);
      }
      case 'AT%CMNG set':
        return this.cmng(params);
      case 'AT%KEYGEN set':
        return this.keygen(params);
      default:
        return this.answer([], 'ERROR');
    }
  }

  private cmng(params: Param[]): Buffer {
    const [opcode, tagArg, typeArg, content] = params.map((p) => p.text);
    // The content is a string constant: a modem refuses it unquoted.
    if (params[3] && !params[3].quoted) return this.answer([], 'ERROR');
    const tag = tagArg === undefined ? undefined : Number(tagArg);
    const type = typeArg === undefined ? undefined : Number(typeArg);
    if (tag !== undefined && (!Number.isInteger(tag) || tag < 0)) return this.answer([], 'ERROR');
    if (tag !== undefined && tag > MAX_SEC_TAG) return this.error(514);
    const key = `${tag},${type}`;
    switch (opcode) {
      case '0': {
        if (tag === undefined || type === undefined || content === undefined || content.length === 0)
          return this.answer([], 'ERROR');
        if (this.cfun === 1) return this.error(518);
        if (this.store.has(key)) return this.error(519);
        if (this.store.size >= (this.opts.capacity ?? 32)) return this.error(515);
        if (
          (type === 0 || type === 1) &&
          !/^-----BEGIN CERTIFICATE-----\r?\n[\s\S]+\r?\n-----END CERTIFICATE-----$/.test(content)
        )
          return this.error(527);
        this.store.set(key, { content, sha256: credentialDigest(content) });
        return this.answer([]);
      }
      case '1': {
        const lines = [...this.store.entries()]
          .map(([k, v]) => [...k.split(',').map(Number), v] as [number, number, Stored])
          .filter(([t, ty]) => (tag === undefined || t === tag) && (type === undefined || ty === type))
          .sort((a, b) => a[0] - b[0] || a[1] - b[1])
          .map(([t, ty, v]) => `%CMNG: ${t},${ty},"${v.sha256}"`);
        return this.answer(lines);
      }
      case '2': {
        const v = this.store.get(key);
        if (!v) return this.error(513);
        return this.answer([`%CMNG: ${tag},${type},"${v.sha256}","${v.content}"`]);
      }
      case '3': {
        if (this.cfun === 1) return this.error(518);
        if (!this.store.delete(key)) return this.error(513);
        return this.answer([]);
      }
      default:
        return this.answer([], 'ERROR');
    }
  }

  private async keygen(params: Param[]): Promise<Buffer> {
    const [tagArg, typeArg, formatArg = '0', attributes] = params.map((p) => p.text);
    if (params[3] && !params[3].quoted) return this.answer([], 'ERROR');
    const tag = Number(tagArg);
    if (
      !Number.isInteger(tag) ||
      tag < 0 ||
      (typeArg !== '2' && typeArg !== '8') ||
      (formatArg !== '0' && formatArg !== '1')
    )
      return this.answer([], 'ERROR');
    if (tag > MAX_SEC_TAG) return this.error(514);
    if (this.cfun === 1) return this.error(518);
    const key = `${tag},${typeArg}`;
    if (this.store.has(key)) return this.error(519);
    let generated;
    try {
      generated = await generateKeyWithCsr(attributes?.length ? attributes : `CN=${this.opts.imei}`);
    } catch {
      return this.error(523);
    }
    const pem = generated.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    this.store.set(key, { content: pem, sha256: credentialDigest(pem) });
    const first = formatArg === '0' ? generated.csrDer : generated.spkiDer;
    const cose = this.attest(first, tag, formatArg === '0' ? 'CSR_msg_v1' : 'pubkey_msg_v2');
    return this.answer([`%KEYGEN: "${first.toString('base64url')}.${cose.toString('base64url')}"`]);
  }

  /** COSE_Sign1 over [type, uuid, sec_tag, SHA-256(first part), nonce], signed by the identity key. */
  private attest(first: Buffer, tag: number, type: string): Buffer {
    const payload = cbor.array([
      cbor.text(type),
      cbor.bytes(this.uuid),
      cbor.uint(tag),
      cbor.bytes(createHash('sha256').update(first).digest()),
      cbor.bytes(randomBytes(16)),
    ]);
    const protectedHeader = cbor.bytes(cbor.map1(cbor.uint(1), cbor.negint(-7))); // alg: ES256
    const toSign = cbor.array([
      cbor.text('Signature1'),
      protectedHeader,
      cbor.bytes(Buffer.alloc(0)),
      cbor.bytes(payload),
    ]);
    const sig = signMessage({ privateKey: this.identityKey, spkiDer: Buffer.alloc(0) }, toSign);
    return cbor.tag(18, cbor.array([protectedHeader, cbor.map0(), cbor.bytes(payload), cbor.bytes(sig)]));
  }

  private error(n: number): Buffer {
    return answer([], errorResult(n, this.cmee));
  }

  private answer(lines: string[], final: 'OK' | 'ERROR' = 'OK'): Buffer {
    return answer(lines, final);
  }
}

/** Just enough CBOR (RFC 8949) for the attestation part. */
const cbor = {
  head(major: number, n: number): Buffer {
    if (n < 24) return Buffer.from([(major << 5) | n]);
    if (n < 0x100) return Buffer.from([(major << 5) | 24, n]);
    if (n < 0x10000) return Buffer.from([(major << 5) | 25, n >> 8, n & 0xff]);
    const b = Buffer.alloc(5);
    b[0] = (major << 5) | 26;
    b.writeUInt32BE(n, 1);
    return b;
  },
  uint: (n: number): Buffer => cbor.head(0, n),
  negint: (n: number): Buffer => cbor.head(1, -1 - n),
  bytes: (b: Buffer): Buffer => Buffer.concat([cbor.head(2, b.length), b]),
  text: (s: string): Buffer => Buffer.concat([cbor.head(3, Buffer.byteLength(s)), Buffer.from(s, 'utf8')]),
  array: (items: Buffer[]): Buffer => Buffer.concat([cbor.head(4, items.length), ...items]),
  map0: (): Buffer => cbor.head(5, 0),
  map1: (k: Buffer, v: Buffer): Buffer => Buffer.concat([cbor.head(5, 1), k, v]),
  tag: (t: number, item: Buffer): Buffer => Buffer.concat([cbor.head(6, t), item]),
};
