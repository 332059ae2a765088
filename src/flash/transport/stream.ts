/**
 * What every byte-stream transport shares (tty and TCP): data and close listeners, telling an
 * expected close from a lost link, and a write that fails as DEVICE_DISCONNECTED once the link
 * is gone.
 */
import { ProvlineError, messageOf } from '../../core/index.js';
import type { Transport } from './transport.js';

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
 * The shared base of the stream transports. Subclasses supply the raw write, whether the link is open, and how to close it.
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
