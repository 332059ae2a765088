/**
 * The byte link to one device, behind one small interface: a local tty through `serialport`
 * (serial.ts) or `tcp://host:port` through a ser2net raw-mode bridge (tcp.ts). Drivers only see
 * this interface; nothing here knows any protocol, and this file imports nothing.
 */

export interface Transport {
  /** The port path or tcp:// address, for messages. */
  readonly target: string;
  /** Bits per second on the wire (what the device UART runs at; ser2net sets it on its side). */
  readonly baudRate: number;
  readonly isOpen: boolean;
  /** Resolves once the bytes have been handed to the OS. */
  write(data: Uint8Array): Promise<void>;
  /** Subscribes to received bytes; returns the unsubscribe function. */
  onData(listener: (chunk: Buffer) => void): () => void;
  /** Called once when the link closes, with the error if it closed on its own (unplug, EOF). */
  onClose(listener: (error?: Error) => void): () => void;
  close(): Promise<void>;
}

export interface TransportOptions {
  baudRate?: number;
  /** RTS/CTS hardware flow control (tty only). */
  rtscts?: boolean;
  openTimeoutMs?: number;
  signal?: AbortSignal;
}

/** Opens a link to a device: how a station gets its transports (tests pass their own). */
export type OpenTransport = (target: string, options: TransportOptions) => Promise<Transport>;

export const DEFAULT_BAUD = 115_200;

/** Payload bytes per second of an 8N1 line: 10 bits on the wire per byte. */
export function lineRateBytesPerSecond(baudRate: number): number {
  return baudRate / 10;
}
