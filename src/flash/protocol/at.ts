/**
 * Pure AT framing for the nRF91 command set, the station's side (shared/reference/
 * device-protocols.md A.1): command encoding, a response reader that turns bytes into complete
 * responses, and parsers for the answers the driver needs. No I/O. The modem's side (reading
 * commands) is the simulator's own, in devices/.
 *
 * Line endings: credential PEMs are written normalised (pem.ts); the SHA-256 a modem reports
 * covers exactly that text.
 */
import { createHash } from 'node:crypto';

/**
 * How a response ends: a final result code, or `urc` for an unsolicited result code, a
 * notification on a line of its own that belongs to no command's answer (`#XMQTTEVT: 0,0`).
 */
export type AtFinal = { kind: 'ok' } | { kind: 'error' } | { kind: 'cme'; code: number } | { kind: 'urc' };

export interface AtResponse {
  /** Information lines before the final result, without line endings, empty lines dropped; for a URC, its one line. */
  lines: string[];
  final: AtFinal;
}

/** Line prefixes of the unsolicited result codes the drivers wait for (SLM's MQTT events). */
export const URC_PREFIXES = ['#XMQTTEVT:'] as const;

/** The credential types of `AT%CMNG` the driver writes. */
export const CMNG_TYPE = { rootCa: 0, clientCert: 1, privateKey: 2 } as const;

/** SHA-256 of the UTF-8 text in upper-case hex, as `AT%CMNG=1` reports it. */
export function sha256Upper(text: string | Uint8Array): string {
  return createHash('sha256').update(text).digest('hex').toUpperCase();
}

export function encodeAt(command: string): Buffer {
  return Buffer.from(`${command}\r\n`, 'utf8');
}

/** `AT%CMNG=0,<sec_tag>,<type>,"<content>"`; the content must already be normalised. */
export function cmngWriteCommand(secTag: number, type: number, content: string): string {
  if (content.length === 0) throw new Error('AT%CMNG content must not be empty');
  if (content.includes('"')) throw new Error('AT%CMNG content must not contain a double quote');
  return `AT%CMNG=0,${secTag},${type},"${content}"`;
}

/** `AT#XMQTTCFG="<client_id>",<keep_alive>,<clean_session>` (SLM, NCS 2.x). */
export function mqttConfigCommand(clientId: string, keepAliveS = 60, cleanSession = true): string {
  if (clientId.includes('"')) throw new Error('the client id must not contain a double quote');
  return `AT#XMQTTCFG="${clientId}",${keepAliveS},${cleanSession ? 1 : 0}`;
}

/** `AT#XMQTTCON=1,"","","<url>",<port>,<sec_tag>`: connect over IPv4 with the sec_tag's credentials. */
export function mqttConnectCommand(host: string, port: number, secTag: number): string {
  if (host.includes('"')) throw new Error('the host must not contain a double quote');
  return `AT#XMQTTCON=1,"","","${host}",${port},${secTag}`;
}

export interface MqttEvent {
  /** 0 connect (CONNACK), 1 disconnect, … (SLM's `<evt_type>`). */
  type: number;
  /** 0 success; for a CONNACK its return code; negative: an errno. */
  result: number;
}

/** `#XMQTTEVT: <evt_type>,<result>`; undefined for any other line. */
export function parseMqttEvent(line: string): MqttEvent | undefined {
  const m = /^#XMQTTEVT: ?(\d+),(-?\d+)$/.exec(line);
  return m ? { type: Number(m[1]), result: Number(m[2]) } : undefined;
}

/** `AT%KEYGEN=<sec_tag>,2,0[,"<subject>"]`: a client private key, answering with a CSR. */
export function keygenCommand(secTag: number, subject?: string): string {
  if (subject !== undefined && subject.includes('"'))
    throw new Error('the subject must not contain a double quote');
  return `AT%KEYGEN=${secTag},2,0${subject ? `,"${subject}"` : ''}`;
}

export function parseFinal(line: string): AtFinal | undefined {
  if (line === 'OK') return { kind: 'ok' };
  if (line === 'ERROR') return { kind: 'error' };
  const m = /^\+CME ERROR: ?(\d+)$/.exec(line);
  return m ? { kind: 'cme', code: Number(m[1]) } : undefined;
}

/**
 * Station side: accumulates received bytes and yields each complete response (information
 * lines up to a final `OK` / `ERROR` / `+CME ERROR: <n>`). Partial data stays buffered.
 */
export class AtResponseReader {
  private partial = '';
  private lines: string[] = [];

  push(chunk: Uint8Array): AtResponse[] {
    const out: AtResponse[] = [];
    this.partial += Buffer.from(chunk).toString('latin1');
    for (;;) {
      const nl = this.partial.indexOf('\n');
      if (nl < 0) break;
      const line = this.partial.slice(0, nl).replace(/\r+$/, '').replace(/^\r+/, '');
      this.partial = this.partial.slice(nl + 1);
      if (line.length === 0) continue;
      if (URC_PREFIXES.some((p) => line.startsWith(p))) {
        out.push({ lines: [line], final: { kind: 'urc' } });
        continue;
      }
      const final = parseFinal(line);
      if (final) {
        out.push({ lines: this.lines, final });
        this.lines = [];
      } else {
        this.lines.push(line);
      }
    }
    return out;
  }

  reset(): void {
    this.partial = '';
    this.lines = [];
  }
}

/** IMEI from `AT+CGSN`: the last non-empty line, its first 15 characters, which must be digits. */
export function parseImei(lines: readonly string[]): string | undefined {
  const last = [...lines].reverse().find((l) => l.trim().length > 0);
  const imei = last?.trim().slice(0, 15);
  return imei && /^\d{15}$/.test(imei) ? imei : undefined;
}

export interface CmngEntry {
  secTag: number;
  type: number;
  sha256: string;
}

/** `%CMNG: <sec_tag>,<type>,"<64 hex>"` lines; anything else (or a damaged line) is skipped. */
export function parseCmngList(lines: readonly string[]): CmngEntry[] {
  const out: CmngEntry[] = [];
  for (const line of lines) {
    const m = /^%CMNG: (\d+),(\d+),"([0-9A-Fa-f]{64})"/.exec(line);
    if (m) out.push({ secTag: Number(m[1]), type: Number(m[2]), sha256: m[3]!.toUpperCase() });
  }
  return out;
}

export interface KeygenAnswer {
  csrDer: Buffer;
  /** The COSE_Sign1 attestation part (signed by the device identity key). */
  cose: Buffer;
}

/** `%KEYGEN: "<base64url(DER CSR)>.<base64url(COSE_Sign1)>"`. */
export function parseKeygen(lines: readonly string[]): KeygenAnswer | undefined {
  for (const line of lines) {
    const m = /^%KEYGEN: "([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)"$/.exec(line);
    if (m) return { csrDer: Buffer.from(m[1]!, 'base64url'), cose: Buffer.from(m[2]!, 'base64url') };
  }
  return undefined;
}
