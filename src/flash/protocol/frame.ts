/**
 * Pure framing and payload codecs for provline-serial-v1 (docs/device-protocol.md). No I/O.
 *
 *   0xA5 0x5A | type u8 | seq u8 | length u16 BE | payload (length bytes) | CRC-32 u32 BE
 *
 * The CRC (CRC-32/ISO-HDLC, the zlib one) covers type, seq, length and payload.
 */

export const SYNC = [0xa5, 0x5a] as const;
export const HEADER_LEN = 6;
export const TRAILER_LEN = 4;
export const MAX_PAYLOAD = 1024;
export const PROTOCOL_VERSION = 1;

export const CMD = {
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
export type CommandType = (typeof CMD)[keyof typeof CMD];

/** A response has the command's type with the top bit set. */
export const RESPONSE_BIT = 0x80;
/** Sent by the device for a frame whose CRC did not match; payload [status]. */
export const NAK = 0x7f;

/** The status byte that starts every response payload (docs/device-protocol.md §5). 0 is OK. */
export const V1_STATUS = {
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

/** Object slots. PEMs are written as normalised text; slot 3 holds the RFC 5649 blob as-is. */
export const SLOT = {
  rootCa: 0,
  certificate: 1,
  privateKey: 2,
  wrappedKey: 3,
  claimCertificate: 4,
  claimKey: 5,
  claimWrappedKey: 6,
  fleetSettings: 7,
} as const;
export type SlotName = keyof typeof SLOT;

export const CAP = {
  keygen: 1 << 0,
  prove: 1 << 1,
  wrappedKeys: 1 << 2,
  connect: 1 << 3,
  fleet: 1 << 4,
} as const;

/** PROVISION failures: where the device's fleet provisioning stopped. */
export const PROVISION_STAGE = ['connect', 'subscribe', 'create', 'register'] as const;

/** CONNECT answers: how each attempt ended (docs/device-protocol.md §4 "First connect"). */
export const CONNECT_OUTCOME = ['connack', 'closed', 'tls', 'timeout', 'network'] as const;

/** Signed by the device in PROVE: SHA-256/ECDSA over this prefix, a zero byte, then the nonce. */
export const POP_CONTEXT = 'provline-pop-v1';

export interface Frame {
  type: number;
  seq: number;
  payload: Buffer;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32/ISO-HDLC (poly 0x04C11DB7 reflected, init and xorout 0xFFFFFFFF). */
export function crc32(data: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of data) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

export function encodeFrame(frame: Frame): Buffer {
  if (frame.payload.length > MAX_PAYLOAD)
    throw new Error(`payload of ${frame.payload.length} bytes exceeds ${MAX_PAYLOAD}`);
  const out = Buffer.alloc(HEADER_LEN + frame.payload.length + TRAILER_LEN);
  out[0] = SYNC[0];
  out[1] = SYNC[1];
  out[2] = frame.type;
  out[3] = frame.seq & 0xff;
  out.writeUInt16BE(frame.payload.length, 4);
  frame.payload.copy(out, HEADER_LEN);
  out.writeUInt32BE(
    crc32(out.subarray(2, HEADER_LEN + frame.payload.length)),
    HEADER_LEN + frame.payload.length,
  );
  return out;
}

/** Checks one complete raw frame (as produced by FrameDecoder or encodeFrame). */
export function decodeFrame(raw: Uint8Array): Frame | undefined {
  const buf = Buffer.from(raw);
  if (buf.length < HEADER_LEN + TRAILER_LEN || buf[0] !== SYNC[0] || buf[1] !== SYNC[1]) return undefined;
  const len = buf.readUInt16BE(4);
  if (len > MAX_PAYLOAD || buf.length !== HEADER_LEN + len + TRAILER_LEN) return undefined;
  if (crc32(buf.subarray(2, HEADER_LEN + len)) !== buf.readUInt32BE(HEADER_LEN + len)) return undefined;
  return { type: buf[2]!, seq: buf[3]!, payload: Buffer.from(buf.subarray(HEADER_LEN, HEADER_LEN + len)) };
}

export type DecodeEvent = { kind: 'frame'; frame: Frame; raw: Buffer } | { kind: 'bad-frame'; raw: Buffer };

/**
 * Byte stream → frames. Bytes before a sync pair are skipped; a frame whose CRC fails is
 * reported as `bad-frame` and scanning resumes one byte after its sync, so a damaged length
 * field cannot swallow the good frames that follow.
 */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Uint8Array): DecodeEvent[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : Buffer.from(chunk);
    const out: DecodeEvent[] = [];
    for (;;) {
      const start = findSync(this.buf);
      if (start < 0) {
        // keep a trailing first sync byte: its partner may be in the next chunk
        this.buf =
          this.buf.length && this.buf[this.buf.length - 1] === SYNC[0]
            ? this.buf.subarray(this.buf.length - 1)
            : Buffer.alloc(0);
        return out;
      }
      if (start > 0) this.buf = this.buf.subarray(start);
      if (this.buf.length < HEADER_LEN) return out;
      const len = this.buf.readUInt16BE(4);
      if (len > MAX_PAYLOAD) {
        out.push({ kind: 'bad-frame', raw: Buffer.from(this.buf.subarray(0, HEADER_LEN)) });
        this.buf = this.buf.subarray(1);
        continue;
      }
      const total = HEADER_LEN + len + TRAILER_LEN;
      if (this.buf.length < total) return out;
      const raw = Buffer.from(this.buf.subarray(0, total));
      const frame = decodeFrame(raw);
      if (frame) {
        out.push({ kind: 'frame', frame, raw });
        this.buf = this.buf.subarray(total);
      } else {
        out.push({ kind: 'bad-frame', raw });
        this.buf = this.buf.subarray(1);
      }
    }
  }

  /** Drops buffered bytes (after a timeout, before a retransmission). */
  reset(): void {
    this.buf = Buffer.alloc(0);
  }
}

function findSync(buf: Buffer): number {
  for (let i = 0; i + 1 < buf.length; i++) if (buf[i] === SYNC[0] && buf[i + 1] === SYNC[1]) return i;
  return -1;
}

/** Bounds-checked reader for payloads; throws PayloadError on a short or overlong payload. */
export class PayloadReader {
  private off = 0;
  constructor(private readonly buf: Buffer) {}

  private need(n: number): void {
    if (this.off + n > this.buf.length)
      throw new PayloadError(`payload too short: need ${n} bytes at ${this.off}`);
  }
  u8(): number {
    this.need(1);
    return this.buf[this.off++]!;
  }
  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16BE(this.off);
    this.off += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.off);
    this.off += 4;
    return v;
  }
  bytes(n: number): Buffer {
    this.need(n);
    const v = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return Buffer.from(v);
  }
  str8(): string {
    return this.bytes(this.u8()).toString('utf8');
  }
  bytes16(): Buffer {
    return this.bytes(this.u16());
  }
  rest(): Buffer {
    return this.bytes(this.buf.length - this.off);
  }
  end(): void {
    if (this.off !== this.buf.length)
      throw new PayloadError(`${this.buf.length - this.off} unexpected trailing bytes`);
  }
}

export class PayloadError extends Error {}

export const u8 = (v: number): Buffer => Buffer.from([v & 0xff]);
export function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
}
export function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
}
export function str8(text: string): Buffer {
  const b = Buffer.from(text, 'utf8');
  if (b.length > 0xff) throw new Error(`"${text.slice(0, 20)}…" is longer than 255 bytes`);
  return Buffer.concat([u8(b.length), b]);
}

export function bytes16(b: Uint8Array): Buffer {
  if (b.length > 0xffff) throw new Error('field longer than 65535 bytes');
  return Buffer.concat([u16(b.length), b]);
}

/** The CONNECT request payload: `host str8, port u16, clientId str8`. */
export function connectPayload(req: { host: string; port: number; clientId: string }): Buffer {
  return Buffer.concat([str8(req.host), u16(req.port), str8(req.clientId)]);
}

export interface ConnectAttemptFields {
  outcome: (typeof CONNECT_OUTCOME)[number];
  code: number;
  reason: string;
}

/** The attempts a CONNECT answer reports (after its status byte); throws PayloadError if malformed. */
export function readConnectAttempts(r: PayloadReader): ConnectAttemptFields[] {
  const n = r.u8();
  const out: ConnectAttemptFields[] = [];
  for (let i = 0; i < n; i++) {
    const o = r.u8();
    const outcome = CONNECT_OUTCOME[o];
    if (!outcome) throw new PayloadError(`unknown connect outcome ${o}`);
    out.push({ outcome, code: r.u8(), reason: r.str8() });
  }
  r.end();
  return out;
}

export interface ProvisionFailureFields {
  stage: (typeof PROVISION_STAGE)[number];
  errorCode: string;
  message: string;
}

/** A PROVISION_DENIED / PROVISION_FAILED answer (after its status byte). */
export function readProvisionFailure(r: PayloadReader): ProvisionFailureFields {
  const n = r.u8();
  const stage = PROVISION_STAGE[n];
  if (!stage) throw new PayloadError(`unknown provisioning stage ${n}`);
  const out = { stage, errorCode: r.str8(), message: r.str8() };
  r.end();
  return out;
}

/** The message the device signs in PROVE. */
export function popMessage(nonce: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from(POP_CONTEXT, 'ascii'), Buffer.from([0]), nonce]);
}
