/**
 * The byte link to one device, behind one small interface: a local tty through `serialport`
 * (serial-transport.ts) or `tcp://host:port` through a ser2net raw-mode bridge
 * (tcp-transport.ts). Drivers only see this interface; nothing here knows any protocol.
 */
import { ProvlineError, messageOf } from '../core/errors.js';

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

export const DEFAULT_BAUD = 115_200;

/** Payload bytes per second of an 8N1 line: 10 bits on the wire per byte. */
export function lineRateBytesPerSecond(baudRate: number): number {
  return baudRate / 10;
}

/** Opens `tcp://host:port` through the TCP transport and anything else as a tty path. */
export async function openTransport(target: string, options: TransportOptions = {}): Promise<Transport> {
  if (target.startsWith('tcp://')) {
    const { openTcpTransport } = await import('./tcp-transport.js');
    return openTcpTransport(target, options);
  }
  if (!target.startsWith('/')) {
    throw new ProvlineError('TRANSPORT_BAD_TARGET', `"${target}" is neither a tty path nor tcp://host:port`, {
      kind: 'invalid-input',
      hint: 'pass the port path explicitly, e.g. /dev/ttyACM0, or tcp://127.0.0.1:3333 for ser2net',
    });
  }
  const { openSerialTransport } = await import('./serial-transport.js');
  return openSerialTransport(target, options);
}

/** Small listener registry shared by the transports. */
export class Listeners<A extends unknown[]> {
  private readonly set = new Set<(...args: A) => void>();
  add(fn: (...args: A) => void): () => void {
    this.set.add(fn);
    return () => this.set.delete(fn);
  }
  emit(...args: A): void {
    for (const fn of [...this.set]) fn(...args);
  }
}

/**
 * What every byte-stream transport shares: data and close listeners, telling an expected close
 * from a lost link, and a write that fails as DEVICE_DISCONNECTED once the link is gone.
 * Subclasses supply the raw write, whether the link is open, and how to close it.
 */
export abstract class StreamTransport implements Transport {
  private readonly data = new Listeners<[Buffer]>();
  private readonly closed = new Listeners<[Error | undefined]>();
  /** Set by close(): the close that follows is expected, not a lost link. */
  protected closing = false;
  private lastError: Error | undefined;

  constructor(
    readonly target: string,
    readonly baudRate: number,
  ) {}

  abstract get isOpen(): boolean;
  abstract close(): Promise<void>;
  protected abstract rawWrite(data: Buffer, done: (err?: Error | null) => void): void;

  protected emitData(chunk: Buffer): void {
    this.data.emit(chunk);
  }

  protected noteError(err: Error): void {
    this.lastError ??= err;
  }

  /** The link went away: listeners learn why, unless close() asked for it. */
  protected emitClosed(fallback: string, err?: Error): void {
    this.closed.emit(this.closing ? undefined : (err ?? this.lastError ?? new Error(fallback)));
  }

  write(data: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      if (!this.isOpen) {
        reject(
          new ProvlineError('DEVICE_DISCONNECTED', `${this.target} is closed`, {
            details: { target: this.target },
          }),
        );
        return;
      }
      this.rawWrite(Buffer.from(data), (err) => {
        if (err)
          reject(
            new ProvlineError('DEVICE_DISCONNECTED', `write to ${this.target} failed: ${messageOf(err)}`, {
              cause: err,
            }),
          );
        else resolve();
      });
    });
  }

  onData(listener: (chunk: Buffer) => void): () => void {
    return this.data.add(listener);
  }

  onClose(listener: (error?: Error) => void): () => void {
    return this.closed.add(listener);
  }
}
