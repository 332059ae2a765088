/**
 * Pure transcripts of a device exchange for the station's per-device log: bytes in each
 * direction become one short line per command and per answer. Nothing that can carry key
 * material is ever described by its content: a private key or a wrapped key written to a device
 * (serial-v1 BEGIN/CHUNK/COMMIT on those slots, `AT%CMNG=0` of any type) is reduced to its
 * slot, offset and length. Certificates and CSRs are public, but are summarised too (a log line
 * is for reading). No I/O.
 */
import type { DriverName } from '../../config/index.js';
import { URC_PREFIXES, parseFinal } from './at.js';
import { CMD, FrameDecoder, NAK, RESPONSE_BIT, SLOT, V1_STATUS, type Frame } from './frame.js';

/** Turns the bytes of one direction of a link into log lines (buffering partial input). */
export interface Transcriber {
  /** Bytes the station wrote. */
  sent(bytes: Uint8Array): string[];
  /** Bytes the device answered. */
  received(bytes: Uint8Array): string[];
}

/** A transcriber for a driver's protocol. */
export function transcriberFor(driver: DriverName): Transcriber {
  switch (driver) {
    case 'provline-serial-v1':
      return new SerialV1Transcriber();
    case 'nordic-at':
      return new AtTranscriber();
  }
}

const COMMAND_NAMES = new Map<number, string>(Object.entries(CMD).map(([name, type]) => [type, name]));
const STATUS_NAMES = new Map<number, string>(Object.entries(V1_STATUS).map(([name, code]) => [code, name]));
const SLOT_NAMES = new Map<number, string>(Object.entries(SLOT).map(([name, slot]) => [slot, name]));

/** Slots whose content is key material: not even a hash of it is logged. */
const KEY_SLOTS: ReadonlySet<number> = new Set([SLOT.privateKey, SLOT.wrappedKey]);

/** provline-serial-v1: one line per frame, command or response. */
export class SerialV1Transcriber implements Transcriber {
  private readonly out = new FrameDecoder();
  private readonly in = new FrameDecoder();
  /** The slot each command in flight names, by sequence number (its answer does not). */
  private readonly slots = new Map<number, number>();

  sent(bytes: Uint8Array): string[] {
    return this.out.push(bytes).map((e) => {
      if (e.kind !== 'frame') return 'damaged frame';
      const slot = e.frame.payload[0];
      if (slot !== undefined) this.slots.set(e.frame.seq, slot);
      return describeCommand(e.frame);
    });
  }

  received(bytes: Uint8Array): string[] {
    return this.in
      .push(bytes)
      .map((e) =>
        e.kind === 'frame' ? describeResponse(e.frame, this.slots.get(e.frame.seq)) : 'damaged frame',
      );
  }
}

function slotName(slot: number | undefined): string {
  return slot === undefined ? 'slot ?' : (SLOT_NAMES.get(slot) ?? `slot ${slot}`);
}

function describeCommand(f: Frame): string {
  const name = COMMAND_NAMES.get(f.type) ?? `0x${f.type.toString(16)}`;
  const p = f.payload;
  const head = `${name} #${f.seq}`;
  try {
    switch (f.type) {
      case CMD.BEGIN:
        return `${head} ${slotName(p[0])}, ${p.readUInt32BE(1)} bytes`;
      case CMD.CHUNK:
        // The data is never described, whatever the slot.
        return `${head} ${slotName(p[0])} at ${p.readUInt32BE(1)}, ${p.length - 5} bytes`;
      case CMD.COMMIT:
      case CMD.READ_HASH:
      case CMD.ERASE:
        return `${head} ${slotName(p[0])}`;
      case CMD.KEYGEN:
        return `${head} subject "${p.subarray(3, 3 + p.readUInt16BE(1)).toString('utf8')}"`;
      case CMD.PROVE:
        return `${head} nonce of ${p.length} bytes`;
      case CMD.CONNECT: {
        const host = p.subarray(1, 1 + p[0]!).toString('utf8');
        const at = 1 + p[0]!;
        const port = p.readUInt16BE(at);
        const client = p.subarray(at + 3, at + 3 + p[at + 2]!).toString('utf8');
        return `${head} ${host}:${port} as ${client}`;
      }
      default:
        return `${head}${p.length ? `, ${p.length} bytes` : ''}`;
    }
  } catch {
    return `${head}, ${p.length} bytes (malformed)`;
  }
}

function describeResponse(f: Frame, slot: number | undefined): string {
  const hashOf = (h: Buffer): string =>
    slot !== undefined && KEY_SLOTS.has(slot)
      ? 'sha256 not logged (key slot)'
      : `sha256 ${h.toString('hex').toUpperCase()}…`;
  if (f.type === NAK) return `NAK #${f.seq}`;
  const name = `${COMMAND_NAMES.get(f.type & ~RESPONSE_BIT) ?? `0x${f.type.toString(16)}`} answer #${f.seq}`;
  const status = f.payload[0];
  const statusName = status === undefined ? 'empty' : (STATUS_NAMES.get(status) ?? `status ${status}`);
  const body = f.payload.subarray(1);
  try {
    if (status === V1_STATUS.OK)
      switch (f.type & ~RESPONSE_BIT) {
        case CMD.IDENTITY: {
          const fields: string[] = [];
          let off = 0;
          for (let i = 0; i < 3; i++) {
            const n = body[off]!;
            fields.push(body.subarray(off + 1, off + 1 + n).toString('utf8'));
            off += 1 + n;
          }
          return `${name} OK: serial ${fields[0]}, model ${fields[1]}, firmware ${fields[2]}`;
        }
        case CMD.READ_HASH:
          return `${name} OK: ${body.readUInt32BE(0)} bytes, ${hashOf(body.subarray(4, 12))}`;
        case CMD.CHUNK:
          return `${name} OK: next offset ${body.readUInt32BE(0)}`;
        case CMD.COMMIT:
          return `${name} OK: ${hashOf(body.subarray(0, 8))}`;
        case CMD.KEYGEN:
          return `${name} OK: CSR of ${body.readUInt16BE(0)} bytes`;
        case CMD.PROVE:
          return `${name} OK: public key and signature (${body.length} bytes)`;
        default:
          break;
      }
    if (f.type === (CMD.CONNECT | RESPONSE_BIT)) return `${name} ${statusName}: ${describeAttempts(body)}`;
  } catch {
    return `${name} ${statusName} (malformed)`;
  }
  return `${name} ${statusName}`;
}

function describeAttempts(body: Buffer): string {
  const n = body[0] ?? 0;
  const parts: string[] = [];
  let off = 1;
  for (let i = 0; i < n && off + 3 <= body.length; i++) {
    const outcome = body[off]!;
    const code = body[off + 1]!;
    const len = body[off + 2]!;
    const reason = body.subarray(off + 3, off + 3 + len).toString('utf8');
    off += 3 + len;
    parts.push(
      outcome === 0
        ? `CONNACK ${code}`
        : `${['connack', 'closed', 'tls', 'timeout', 'network'][outcome] ?? outcome}${reason ? ` (${reason})` : ''}`,
    );
  }
  return `${n} attempt${n === 1 ? '' : 's'}${parts.length ? `: ${parts.join(', ')}` : ''}`;
}

/** One quoted field of an AT command: its length, and its text only when short and harmless. */
interface Quoted {
  len: number;
  text: string | undefined;
}

/** Quoted fields at most this long are kept (client ids, host names, subjects). */
const QUOTED_KEPT = 64;

/**
 * The nRF91 AT command set: one line per command, per information line and per final result.
 * A command ends at CR LF outside quotes: a credential's PEM inside quotes has CR LF line
 * endings of its own, and its content is never kept, only counted.
 */
export class AtTranscriber implements Transcriber {
  private plain = '';
  private fields: Quoted[] = [];
  private quoted: Quoted | undefined;
  private inBuf = '';

  sent(bytes: Uint8Array): string[] {
    const out: string[] = [];
    for (const ch of Buffer.from(bytes).toString('latin1')) {
      if (this.quoted) {
        if (ch === '"') {
          this.fields.push(this.quoted);
          this.plain += `"\uE000${this.fields.length - 1}"`;
          this.quoted = undefined;
        } else {
          this.quoted.len++;
          if (this.quoted.text !== undefined)
            this.quoted.text = this.quoted.len <= QUOTED_KEPT ? this.quoted.text + ch : undefined;
        }
      } else if (ch === '"') {
        // Nothing of a credential write's content is kept, not even its first characters.
        this.quoted = { len: 0, text: this.plain.startsWith('AT%CMNG=0,') ? undefined : '' };
      } else if (ch === '\n' && this.plain.endsWith('\r')) {
        const command = this.plain.slice(0, -1);
        if (command.length) out.push(describeAtCommand(command, this.fields));
        this.plain = '';
        this.fields = [];
      } else this.plain += ch;
    }
    return out;
  }

  received(bytes: Uint8Array): string[] {
    this.inBuf += Buffer.from(bytes).toString('latin1');
    const out: string[] = [];
    for (let nl = this.inBuf.indexOf('\n'); nl >= 0; nl = this.inBuf.indexOf('\n')) {
      const line = this.inBuf.slice(0, nl).replace(/\r+$/, '').replace(/^\r+/, '');
      this.inBuf = this.inBuf.slice(nl + 1);
      if (line.length) out.push(describeAtAnswer(line));
    }
    return out;
  }
}

const CMNG_TYPES: Record<string, string> = { '0': 'root CA', '1': 'client certificate', '2': 'private key' };

/**
 * A command whose quoted fields stand as `"\uE000<n>"` for `fields[n]`: a credential write is
 * reduced to its sec_tag, type and length; other quoted fields are shown when short.
 */
function describeAtCommand(command: string, fields: readonly Quoted[]): string {
  const field = (n: string): Quoted => fields[Number(n)] ?? { len: 0, text: undefined };
  const write = /^AT%CMNG=0,(\d+),(\d+),"\uE000(\d+)"/.exec(command);
  if (write)
    return `AT%CMNG=0,${write[1]},${write[2]},"…" (${CMNG_TYPES[write[2]!] ?? `type ${write[2]}`}, ${field(write[3]!).len} bytes, content not logged)`;
  return command.replace(/"\uE000(\d+)"/g, (_m, n: string) => {
    const q = field(n);
    return q.text !== undefined ? `"${q.text}"` : `"…" (${q.len} bytes)`;
  });
}

function describeAtAnswer(line: string): string {
  if (parseFinal(line) || URC_PREFIXES.some((p) => line.startsWith(p))) return line;
  const keygen = /^%KEYGEN: "([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)"$/.exec(line);
  if (keygen)
    return `%KEYGEN: CSR of ${Buffer.from(keygen[1]!, 'base64url').length} bytes, attestation of ${Buffer.from(keygen[2]!, 'base64url').length} bytes`;
  const cmng = /^%CMNG: (\d+),(\d+),"([0-9A-Fa-f]{64})"/.exec(line);
  if (cmng)
    return cmng[2] === '2'
      ? `%CMNG: ${cmng[1]},2,"…" (private key: its hash is not logged)`
      : `%CMNG: ${cmng[1]},${cmng[2]},"${cmng[3]!.slice(0, 16)}…"`;
  // Anything long and unexpected (a modem echoing content back) is summarised, not kept.
  return line.length > 120 ? `(${line.length} characters)` : line;
}
