/**
 * A simulated custom-firmware device speaking provline-serial-v1 (docs/device-protocol.md):
 * a staging buffer per write with cumulative acknowledgements, a SHA-256 check on COMMIT,
 * a KEK to unwrap wrapped keys as-is, on-device keygen with a CSR, and PROVE signing.
 */
import { createHash } from 'node:crypto';
import {
  CAP,
  CMD,
  FrameDecoder,
  MAX_PAYLOAD,
  NAK,
  PROTOCOL_VERSION,
  PayloadError,
  PayloadReader,
  RESPONSE_BIT,
  SLOT,
  V1_STATUS,
  bytes16,
  decodeFrame,
  encodeFrame,
  popMessage,
  str8,
  u16,
  u32,
  u8,
  type Frame,
} from '../src/flash/protocol/index.js';
import type { Category } from './core/faults.js';
import type { DeviceModel } from './core/host.js';
import { fromPem, generateKeyWithCsr, signMessage, unwrapKey, type DeviceKey } from './core/device-crypto.js';

export interface SerialV1SimOptions {
  serial: string;
  model?: string;
  firmware?: string;
  /** 32-byte AES-256 KEK; without it the device cannot take wrapped keys. */
  kek?: Buffer;
  /** Largest object the device stores. */
  maxObject?: number;
}

interface Staging {
  slot: number;
  size: number;
  sha256: Buffer;
  data: Buffer[];
  received: number;
}

const sha256 = (b: Buffer): Buffer => createHash('sha256').update(b).digest();

export class SerialV1Model implements DeviceModel {
  readonly objects = new Map<number, Buffer>();
  key: DeviceKey | undefined;
  private staging: Staging | undefined;
  private readonly decoder = new FrameDecoder();

  constructor(private readonly opts: SerialV1SimOptions) {
    if (opts.kek && opts.kek.length !== 32) throw new Error('the KEK must be 32 bytes (AES-256)');
  }

  split(chunk: Buffer): Buffer[] {
    // Damaged frames are passed on too, so the device can NAK them.
    return this.decoder.push(chunk).map((e) => e.raw);
  }

  categorize(raw: Buffer): Category {
    const type = raw.length > 2 ? raw[2] : undefined;
    switch (type) {
      case CMD.HELLO:
      case CMD.IDENTITY:
        return 'identity';
      case CMD.CHUNK:
      case CMD.COMMIT:
        return 'write';
      case CMD.READ_HASH:
        return 'read';
      case CMD.KEYGEN:
        return 'keygen';
      case CMD.PROVE:
        return 'pop';
      default:
        return 'control';
    }
  }

  rejection(raw: Buffer): Buffer | undefined {
    const frame = decodeFrame(raw);
    if (frame?.type !== CMD.COMMIT) return undefined;
    // The station starts the object again with BEGIN, which replaces the staging buffer.
    return reply(frame, V1_STATUS.CONTENT_REJECTED);
  }

  async handle(raw: Buffer): Promise<Buffer | undefined> {
    const frame = decodeFrame(raw);
    if (!frame) return encodeFrame({ type: NAK, seq: 0, payload: u8(V1_STATUS.BAD_FRAME) });
    try {
      return await this.run(frame);
    } catch (e) {
      if (e instanceof PayloadError) return reply(frame, V1_STATUS.BAD_PAYLOAD);
      throw e;
    }
  }

  private get caps(): number {
    return CAP.keygen | CAP.prove | (this.opts.kek ? CAP.wrappedKeys : 0);
  }

  private async run(frame: Frame): Promise<Buffer> {
    const r = new PayloadReader(frame.payload);
    switch (frame.type) {
      case CMD.HELLO: {
        const min = r.u8();
        const max = r.u8();
        r.end();
        if (PROTOCOL_VERSION < min || PROTOCOL_VERSION > max)
          return reply(frame, V1_STATUS.VERSION_UNSUPPORTED);
        return reply(frame, V1_STATUS.OK, u8(PROTOCOL_VERSION), u16(MAX_PAYLOAD), u32(this.caps));
      }
      case CMD.IDENTITY:
        r.end();
        return reply(
          frame,
          V1_STATUS.OK,
          str8(this.opts.serial),
          str8(this.opts.model ?? 'provline-sim'),
          str8(this.opts.firmware ?? 'sim-1.0.0'),
        );
      case CMD.BEGIN: {
        const slot = r.u8();
        const size = r.u32();
        const digest = r.bytes(32);
        r.end();
        if (!isSlot(slot) || size === 0) return reply(frame, V1_STATUS.BAD_PAYLOAD);
        if (slot === SLOT.wrappedKey && !this.opts.kek) return reply(frame, V1_STATUS.UNWRAP_FAILED);
        if (size > (this.opts.maxObject ?? 16_384)) return reply(frame, V1_STATUS.NO_SPACE);
        this.staging = { slot, size, sha256: digest, data: [], received: 0 };
        return reply(frame, V1_STATUS.OK);
      }
      case CMD.CHUNK: {
        const slot = r.u8();
        const offset = r.u32();
        const data = r.rest();
        const s = this.staging;
        if (!s || s.slot !== slot) return reply(frame, V1_STATUS.BAD_PAYLOAD);
        if (offset + data.length === s.received && offset < s.received)
          return reply(frame, V1_STATUS.OK, u32(s.received)); // a retransmission
        if (offset !== s.received) return reply(frame, V1_STATUS.BAD_OFFSET, u32(s.received));
        if (s.received + data.length > s.size) return reply(frame, V1_STATUS.BAD_PAYLOAD);
        s.data.push(data);
        s.received += data.length;
        return reply(frame, V1_STATUS.OK, u32(s.received));
      }
      case CMD.COMMIT: {
        const slot = r.u8();
        r.end();
        return this.commit(frame, slot);
      }
      case CMD.READ_HASH: {
        const slot = r.u8();
        r.end();
        const stored = this.objects.get(slot);
        if (!stored) return reply(frame, V1_STATUS.NOT_FOUND);
        return reply(frame, V1_STATUS.OK, u32(stored.length), sha256(stored));
      }
      case CMD.ERASE: {
        const slot = r.u8();
        r.end();
        if (!this.objects.delete(slot)) return reply(frame, V1_STATUS.NOT_FOUND);
        return reply(frame, V1_STATUS.OK);
      }
      case CMD.KEYGEN: {
        const keyType = r.u8();
        const subject = r.bytes16().toString('utf8');
        r.end();
        if (keyType !== 1) return reply(frame, V1_STATUS.BAD_PAYLOAD);
        const generated = await generateKeyWithCsr(subject || `CN=${this.opts.serial}`);
        this.key = generated;
        this.objects.delete(SLOT.privateKey);
        this.objects.delete(SLOT.wrappedKey);
        return reply(frame, V1_STATUS.OK, bytes16(generated.csrDer));
      }
      case CMD.PROVE: {
        const nonce = r.rest();
        if (nonce.length < 16 || nonce.length > 64) return reply(frame, V1_STATUS.BAD_PAYLOAD);
        if (!this.key) return reply(frame, V1_STATUS.NO_KEY);
        return reply(
          frame,
          V1_STATUS.OK,
          bytes16(this.key.spkiDer),
          bytes16(signMessage(this.key, popMessage(nonce))),
        );
      }
      default:
        return reply(frame, V1_STATUS.UNKNOWN_COMMAND);
    }
  }

  private commit(frame: Frame, slot: number): Buffer {
    const s = this.staging;
    if (!s || s.slot !== slot) {
      // A retransmitted COMMIT whose answer was lost: report what is stored.
      const stored = this.objects.get(slot);
      return stored ? reply(frame, V1_STATUS.OK, sha256(stored)) : reply(frame, V1_STATUS.NOT_FOUND);
    }
    this.staging = undefined;
    const data = Buffer.concat(s.data);
    if (s.received !== s.size || !sha256(data).equals(s.sha256)) return reply(frame, V1_STATUS.HASH_MISMATCH);
    if (slot === SLOT.privateKey || slot === SLOT.wrappedKey) {
      try {
        this.key =
          slot === SLOT.privateKey ? fromPem(data.toString('utf8')) : unwrapKey(this.opts.kek!, data);
      } catch {
        return reply(frame, slot === SLOT.wrappedKey ? V1_STATUS.UNWRAP_FAILED : V1_STATUS.KEY_INVALID);
      }
    }
    this.objects.set(slot, data);
    return reply(frame, V1_STATUS.OK, sha256(data));
  }
}

function isSlot(n: number): boolean {
  return (Object.values(SLOT) as number[]).includes(n);
}

function reply(request: Frame, status: number, ...body: Buffer[]): Buffer {
  return encodeFrame({
    type: request.type | RESPONSE_BIT,
    seq: request.seq,
    payload: Buffer.concat([u8(status), ...body]),
  });
}
