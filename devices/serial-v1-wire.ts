/**
 * The device's side of the provline-serial-v1 wire format, written from docs/device-protocol.md
 * (§2 framing, §4 commands, §5 status codes) the way firmware would: a receiver fed byte by
 * byte, a bitwise CRC, and field readers that refuse short or overlong payloads.
 *
 * It shares no code with the station's driver (src/flash): the simulator and the driver are two
 * readings of the same document, so a framing mistake on either side shows up as a failed
 * exchange instead of being mirrored by the other.
 */

/** §2: every frame starts with these two bytes. */
export const SYNC_1 = 0xa5;
export const SYNC_2 = 0x5a;
/** §2: sync (2) + type + seq + length (2). */
const HEAD = 6;
/** §2: CRC-32 after the payload. */
const TAIL = 4;
/** §2: the largest payload either side may send. */
export const PAYLOAD_LIMIT = 1024;

/** §4: request types. A response is `type | 0x80`. */
export const Command = {
  HELLO: 0x01,
  IDENTITY: 0x02,
  BEGIN: 0x10,
  CHUNK: 0x11,
  COMMIT: 0x12,
  READ_HASH: 0x13,
  ERASE: 0x14,
  KEYGEN: 0x20,
  PROVE: 0x21,
  CONNECT: 0x30,
  PROVISION: 0x31,
} as const;
const ANSWER_FLAG = 0x80;
/** §2: the device's answer to a frame it could not check. */
export const NAK_TYPE = 0x7f;

/** §5: the status byte that starts every response. */
export const Status = {
  OK: 0,
  UNKNOWN_COMMAND: 1,
  BAD_PAYLOAD: 2,
  BAD_OFFSET: 3,
  HASH_MISMATCH: 4,
  NOT_FOUND: 5,
  NO_SPACE: 6,
  UNWRAP_FAILED: 7,
  KEY_INVALID: 8,
  BUSY: 9,
  NO_KEY: 10,
  VERSION_UNSUPPORTED: 11,
  CONTENT_REJECTED: 12,
  BAD_FRAME: 13,
  CONNECT_FAILED: 14,
  PROVISION_DENIED: 15,
  PROVISION_FAILED: 16,
} as const;

/** §4 "Slots". */
export const Slot = {
  ROOT_CA: 0,
  CERTIFICATE: 1,
  PRIVATE_KEY: 2,
  WRAPPED_KEY: 3,
  CLAIM_CERTIFICATE: 4,
  CLAIM_KEY: 5,
  CLAIM_WRAPPED_KEY: 6,
  FLEET_SETTINGS: 7,
} as const;
/** §4 "Version negotiation": bit numbers of `caps`. */
export const Caps = { KEYGEN: 1, PROVE: 2, WRAPPED_KEYS: 4, CONNECT: 8, FLEET: 16 } as const;
/** §4 "Fleet provisioning": where a PROVISION stopped, as the answer numbers it. */
export const ProvisionStage = { connect: 0, subscribe: 1, create: 2, register: 3 } as const;
/** §4 "First connect": how an attempt ended, as the answer numbers it. */
export const ConnectOutcome = { connack: 0, closed: 1, tls: 2, timeout: 3, network: 4 } as const;
/** §4: the protocol version this device speaks. */
export const VERSION = 1;
/** §4 "Proof of possession": what PROVE signs is this text, a zero byte, then the nonce. */
export const PROOF_PREFIX = 'provline-pop-v1';

/**
 * CRC-32/ISO-HDLC (§2): reflected polynomial 0xEDB88320, init and final XOR 0xFFFFFFFF,
 * computed bit by bit as small firmware does (no table).
 */
export function crc32IsoHdlc(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return ~crc >>> 0;
}

export interface WireFrame {
  type: number;
  seq: number;
  payload: Buffer;
}

/** Builds one frame: sync, type, seq, length (big-endian), payload, CRC over type..payload. */
export function frameBytes(f: WireFrame): Buffer {
  if (f.payload.length > PAYLOAD_LIMIT)
    throw new RangeError(`a ${f.payload.length}-byte payload is too long`);
  const body = Buffer.concat([
    Buffer.from([f.type, f.seq & 0xff, f.payload.length >> 8, f.payload.length & 0xff]),
    f.payload,
  ]);
  const crc = crc32IsoHdlc(body);
  return Buffer.concat([
    Buffer.from([SYNC_1, SYNC_2]),
    body,
    Buffer.from([crc >>> 24, (crc >>> 16) & 0xff, (crc >>> 8) & 0xff, crc & 0xff]),
  ]);
}

/** An answer to `request`: its type with the top bit set, its seq, the status, then fields. */
export function answerBytes(request: WireFrame, status: number, ...fields: Buffer[]): Buffer {
  return frameBytes({
    type: request.type | ANSWER_FLAG,
    seq: request.seq,
    payload: Buffer.concat([Buffer.from([status]), ...fields]),
  });
}

/** §2: a NAK (seq 0, payload BAD_FRAME) for a frame whose check failed. */
export function nakBytes(): Buffer {
  return frameBytes({ type: NAK_TYPE, seq: 0, payload: Buffer.from([Status.BAD_FRAME]) });
}

/**
 * Reads one whole frame as received (sync to CRC). Undefined if it is not one: wrong sync,
 * a length over the limit or not matching the bytes, or a CRC that does not check.
 */
export function readFrame(raw: Uint8Array): WireFrame | undefined {
  if (raw.length < HEAD + TAIL || raw[0] !== SYNC_1 || raw[1] !== SYNC_2) return undefined;
  const length = (raw[4]! << 8) | raw[5]!;
  if (length > PAYLOAD_LIMIT || raw.length !== HEAD + length + TAIL) return undefined;
  const at = HEAD + length;
  const sent = ((raw[at]! << 24) | (raw[at + 1]! << 16) | (raw[at + 2]! << 8) | raw[at + 3]!) >>> 0;
  if (crc32IsoHdlc(raw.subarray(2, at)) !== sent) return undefined;
  return { type: raw[2]!, seq: raw[3]!, payload: Buffer.from(raw.subarray(HEAD, at)) };
}

/** What the receiver hands on: a frame that checked out, or the bytes of one that did not. */
export type Received = { ok: true; frame: WireFrame; raw: Buffer } | { ok: false; raw: Buffer };

/**
 * The receive side of a UART: bytes go in one at a time; a candidate frame is collected from
 * its sync pair until its length says it is complete. A candidate with a length over the limit
 * or a failing CRC is handed on as damaged (so the device can NAK it), and scanning starts again
 * one byte after its first sync byte, as §2 asks, so a damaged length cannot swallow the frames
 * behind it.
 */
export class FrameReceiver {
  private candidate: number[] = [];

  push(chunk: Uint8Array): Received[] {
    const out: Received[] = [];
    const todo: number[] = [...chunk];
    for (let i = 0; i < todo.length; i++) {
      const retry = this.take(todo[i]!, out);
      // Rescan what followed the failed candidate's first sync byte, before the rest of the input.
      if (retry) todo.splice(i + 1, 0, ...retry);
    }
    return out;
  }

  /** Takes one byte; returns bytes to scan again when a candidate failed. */
  private take(byte: number, out: Received[]): number[] | undefined {
    const c = this.candidate;
    if (c.length === 0) {
      if (byte === SYNC_1) c.push(byte);
      return undefined;
    }
    if (c.length === 1) {
      if (byte === SYNC_2) c.push(byte);
      else if (byte !== SYNC_1) this.candidate = [];
      return undefined;
    }
    c.push(byte);
    if (c.length < HEAD) return undefined;
    const length = (c[4]! << 8) | c[5]!;
    if (length > PAYLOAD_LIMIT) return this.reject(out);
    if (c.length < HEAD + length + TAIL) return undefined;
    const raw = Buffer.from(c);
    const frame = readFrame(raw);
    if (!frame) return this.reject(out);
    this.candidate = [];
    out.push({ ok: true, frame, raw });
    return undefined;
  }

  private reject(out: Received[]): number[] {
    const bytes = this.candidate;
    this.candidate = [];
    out.push({ ok: false, raw: Buffer.from(bytes) });
    return bytes.slice(1);
  }
}

/** A request payload too short for its fields, or with bytes left over (BAD_PAYLOAD). */
export class MalformedPayload extends Error {}

/** Reads a request's fields in order (§2: integers big-endian, str8, bytes16). */
export class Fields {
  private at = 0;
  constructor(private readonly payload: Buffer) {}

  private slice(n: number): Buffer {
    if (this.at + n > this.payload.length)
      throw new MalformedPayload(`${n} more bytes wanted at offset ${this.at} of ${this.payload.length}`);
    const part = this.payload.subarray(this.at, this.at + n);
    this.at += n;
    return part;
  }

  byte(): number {
    return this.slice(1)[0]!;
  }
  half(): number {
    return this.slice(2).readUInt16BE(0);
  }
  word(): number {
    return this.slice(4).readUInt32BE(0);
  }
  /** `str8`: a length byte, then that many bytes of UTF-8. */
  text8(): string {
    return this.slice(this.byte()).toString('utf8');
  }
  digest(): Buffer {
    return Buffer.from(this.slice(32));
  }
  lengthPrefixed16(): Buffer {
    return Buffer.from(this.slice(this.slice(2).readUInt16BE(0)));
  }
  remainder(): Buffer {
    return Buffer.from(this.slice(this.payload.length - this.at));
  }
  /** The payload must end here. */
  done(): void {
    if (this.at !== this.payload.length)
      throw new MalformedPayload(`${this.payload.length - this.at} bytes left over`);
  }
}

/** Field writers for answers. */
export const put = {
  byte: (v: number): Buffer => Buffer.from([v & 0xff]),
  half: (v: number): Buffer => Buffer.from([(v >> 8) & 0xff, v & 0xff]),
  word(v: number): Buffer {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v >>> 0, 0);
    return b;
  },
  /** `str8`: a length byte, then UTF-8. */
  text8(s: string): Buffer {
    const utf8 = Buffer.from(s, 'utf8');
    if (utf8.length > 0xff) throw new RangeError('a str8 field holds at most 255 bytes');
    return Buffer.concat([Buffer.from([utf8.length]), utf8]);
  },
  /** `bytes16`: a big-endian u16 length, then the bytes. */
  bytes16(b: Uint8Array): Buffer {
    if (b.length > 0xffff) throw new RangeError('a bytes16 field holds at most 65535 bytes');
    return Buffer.concat([put.half(b.length), b]);
  },
};

/** §4: the message PROVE signs. */
export function proofMessage(nonce: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from(PROOF_PREFIX, 'ascii'), Buffer.from([0]), nonce]);
}
