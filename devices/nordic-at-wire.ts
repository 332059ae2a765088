/**
 * The modem's side of the nRF91 AT command line, written from the reference
 * (shared/reference/device-protocols.md A.1) and ITU-T V.250's command syntax: how a modem cuts
 * the incoming bytes into command lines, reads a command's name and parameters, and formats its
 * answers and credential hashes.
 *
 * It shares no code with the station's driver (src/flash): the driver builds commands and reads
 * answers, this reads commands and builds answers, each from the document.
 */
import { createHash } from 'node:crypto';

const QUOTE = 0x22;
const CR = 0x0d;
const LF = 0x0a;

/**
 * Cuts the byte stream into command lines. A line ends at CR or LF; inside a double-quoted
 * string both are part of the string (a PEM written with `AT%CMNG=0` spans lines). Empty lines
 * (the LF of a CRLF) are not commands.
 */
export class CommandLines {
  private line: number[] = [];
  private quoted = false;

  push(chunk: Uint8Array): Buffer[] {
    const lines: Buffer[] = [];
    for (const byte of chunk) {
      if (!this.quoted && (byte === CR || byte === LF)) {
        if (this.line.length > 0) lines.push(Buffer.from(this.line));
        this.line = [];
        continue;
      }
      if (byte === QUOTE) this.quoted = !this.quoted;
      this.line.push(byte);
    }
    return lines;
  }
}

/** One parameter as sent: its text, and whether it was a quoted string constant. */
export interface Param {
  text: string;
  quoted: boolean;
}

/** How a command was used (V.250 §5.4): set `=`, read `?`, test `=?`, or a bare action. */
export type Usage = 'action' | 'set' | 'read' | 'test';

export interface ParsedCommand {
  /** The command name in upper case with its prefix: `AT`, `AT+CGSN`, `AT%CMNG`, `AT#XMQTTCON`. */
  name: string;
  usage: Usage;
  params: Param[];
}

/**
 * Reads one command line: `AT`, then an optional `+`, `%` or `#` (the Serial LTE Modem
 * application's own commands) extended name, then `=<params>`,
 * `?`, `=?` or nothing. Parameters are separated by commas; a quoted one keeps everything
 * between its quotes (commas and line breaks included). Undefined for a line that is no
 * command, or whose quotes do not close.
 */
export function parseCommand(line: string): ParsedCommand | undefined {
  const head = /^\s*(AT(?:[+%#][A-Z][A-Z0-9]*)?)/i.exec(line);
  if (!head) return undefined;
  const name = head[1]!.toUpperCase();
  const rest = line.slice(head[0].length).replace(/\s+$/, '');
  if (rest === '') return { name, usage: 'action', params: [] };
  if (rest === '?') return { name, usage: 'read', params: [] };
  if (rest === '=?') return { name, usage: 'test', params: [] };
  if (!rest.startsWith('=')) return undefined;
  const params = splitParams(rest.slice(1));
  return params && { name, usage: 'set', params };
}

function splitParams(text: string): Param[] | undefined {
  const params: Param[] = [];
  let i = 0;
  for (;;) {
    if (text[i] === '"') {
      const close = text.indexOf('"', i + 1);
      if (close < 0) return undefined;
      params.push({ text: text.slice(i + 1, close), quoted: true });
      i = close + 1;
    } else {
      const comma = text.indexOf(',', i);
      const end = comma < 0 ? text.length : comma;
      params.push({ text: text.slice(i, end).trim(), quoted: false });
      i = end;
    }
    if (i >= text.length) return params;
    if (text[i] !== ',') return undefined; // text after a closing quote
    i++;
  }
}

/**
 * An answer as the modem sends it with verbose results: every information line and the final
 * result code each framed by CR LF (`\r\n%CMNG: …\r\n\r\nOK\r\n`), then any unsolicited
 * result codes that followed it (`\r\n#XMQTTEVT: 0,0\r\n`).
 */
export function answer(lines: readonly string[], final: string, unsolicited: readonly string[] = []): Buffer {
  return Buffer.from([...lines, final, ...unsolicited].map((l) => `\r\n${l}\r\n`).join(''), 'latin1');
}

/** `+CME ERROR: <n>` with numeric error reporting on (`AT+CMEE=1`), plain `ERROR` otherwise. */
export function errorResult(code: number, numeric: boolean): string {
  return numeric ? `+CME ERROR: ${code}` : 'ERROR';
}

/**
 * The digest `AT%CMNG=1` lists for a stored credential: SHA-256 over the stored bytes exactly
 * as they arrived, in upper-case hex.
 */
export function credentialDigest(stored: string): string {
  return createHash('sha256').update(Buffer.from(stored, 'latin1')).digest('hex').toUpperCase();
}
