/**
 * Pure transcripts of a device exchange for the station's per-device log: bytes in each
 * direction become one short line per command and per answer. Nothing that can carry key
 * material is ever described by its content: a private key or a wrapped key written to a device
 * (serial-v1 BEGIN/CHUNK/COMMIT on those slots, `AT%CMNG=0` of any type) is reduced to its
 * slot, offset and length. Certificates and CSRs are public, but are summarised too (a log line
 * is for reading). No I/O.
 */
import type { DriverName } from '../../config/schema.js';
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

/** provline-serial-v1: one line per frame, command or response. */
export class SerialV1Transcriber implements Transcriber {
  private readonly out = new FrameDecoder();
  private readonly in = new FrameDecoder();

  sent(bytes: Uint8Array): string[] {
    return this.out.push(bytes).map((e) => (e.kind === 'frame' ? describeCommand(e.frame) : 'damaged frame'));
  }

  received(bytes: Uint8Array): string[] {
    return this.in.push(bytes).map((e) => (e.kind === 'frame' ? describeResponse(e.frame) : 'damaged frame'));
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

function describeResponse(f: Frame): string {
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
          return `${name} OK: ${body.readUInt32BE(0)} bytes, sha256 ${body.subarray(4, 12).toString('hex').toUpperCase()}…`;
        case CMD.CHUNK:
          return `${name} OK: next offset ${body.readUInt32BE(0)}`;
        case CMD.COMMIT:
          return `${name} OK: sha256 ${body.subarray(0, 8).toString('hex').toUpperCase()}…`;
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

/** The nRF91 AT command set: one line per command, per information line and per final result. */
export class AtTranscriber implements Transcriber {
  private outBuf = '';
  private inBuf = '';

  sent(bytes: Uint8Array): string[] {
    this.outBuf += Buffer.from(bytes).toString('latin1');
    const out: string[] = [];
    // A command ends with CR LF; a credential's PEM inside quotes has bare LFs.
    for (let end = this.outBuf.indexOf('\r\n'); end >= 0; end = this.outBuf.indexOf('\r\n')) {
      const command = this.outBuf.slice(0, end);
      this.outBuf = this.outBuf.slice(end + 2);
      if (command.length) out.push(describeAtCommand(command));
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

/** A command, with the content of any credential write reduced to its type and length. */
export function describeAtCommand(command: string): string {
  const write = /^AT%CMNG=0,(\d+),(\d+),"/.exec(command);
  if (write) {
    const content = command.length - write[0].length - 1;
    return `AT%CMNG=0,${write[1]},${write[2]},"…" (${CMNG_TYPES[write[2]!] ?? `type ${write[2]}`}, ${content} bytes, content not logged)`;
  }
  // Any other quoted field longer than a name is left out too: it is no command's business here.
  return command.replace(/"([^"]{80,})"/g, (_m, s: string) => `"…" (${s.length} bytes)`);
}

function describeAtAnswer(line: string): string {
  if (parseFinal(line) || URC_PREFIXES.some((p) => line.startsWith(p))) return line;
  const keygen = /^%KEYGEN: "([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)"$/.exec(line);
  if (keygen)
    return `%KEYGEN: CSR of ${Buffer.from(keygen[1]!, 'base64url').length} bytes, attestation of ${Buffer.from(keygen[2]!, 'base64url').length} bytes`;
  const cmng = /^%CMNG: (\d+),(\d+),"([0-9A-Fa-f]{64})"/.exec(line);
  if (cmng) return `%CMNG: ${cmng[1]},${cmng[2]},"${cmng[3]!.slice(0, 16)}…"`;
  // Anything long and unexpected (a modem echoing content back) is summarised, not kept.
  return line.length > 120 ? `(${line.length} characters)` : line;
}
