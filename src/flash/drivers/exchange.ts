/**
 * Request/response over a Transport: write one request, wait for the first decoded item the
 * caller accepts, with a timeout, an AbortSignal, and a clean failure if the link closes. One
 * request at a time per link (the protocols are half-duplex by design; stack-notes.md §7).
 */
import type { ProvlineError } from '../../core/index.js';
import { abortedError, disconnectedError, timeoutError } from './errors.js';
import { lineRateBytesPerSecond, type Transport } from '../transport/transport.js';

export interface Decoder<T> {
  push(chunk: Uint8Array): T[];
  reset(): void;
}

export interface RequestOptions<T> {
  /** Names the command in errors. */
  what: string;
  timeoutMs: number;
  signal?: AbortSignal;
  /** Items not accepted (stale answers, NAKs handled elsewhere) are dropped. Default: all. */
  accept?: (item: T) => boolean;
}

interface Waiter<T> {
  accept: (item: T) => boolean;
  resolve: (item: T) => void;
  reject: (err: ProvlineError) => void;
  what: string;
}

export class Exchange<T> {
  private waiter: Waiter<T> | undefined;
  private closedBy: ProvlineError | undefined;
  private busy = false;
  private readonly unsubscribe: (() => void)[];
  /** Bytes written and received, for line-rate accounting. */
  bytesOut = 0;
  bytesIn = 0;

  constructor(
    readonly transport: Transport,
    private readonly decoder: Decoder<T>,
  ) {
    this.unsubscribe = [
      transport.onData((chunk) => {
        this.bytesIn += chunk.length;
        for (const item of this.decoder.push(chunk)) {
          const w = this.waiter;
          if (w?.accept(item)) {
            this.waiter = undefined;
            w.resolve(item);
          }
        }
      }),
      transport.onClose((err) => {
        this.closedBy = disconnectedError(this.waiter?.what ?? 'idle', err);
        const w = this.waiter;
        this.waiter = undefined;
        if (w) w.reject(disconnectedError(w.what, err));
      }),
    ];
  }

  /** Milliseconds the line needs to carry `bytes` at the transport's baud rate. */
  wireMs(bytes: number): number {
    return (bytes / lineRateBytesPerSecond(this.transport.baudRate)) * 1000;
  }

  async request(data: Uint8Array, options: RequestOptions<T>): Promise<T> {
    if (this.closedBy) throw disconnectedError(options.what, this.closedBy);
    if (this.busy) throw new Error(`Exchange: ${options.what} while another request is in flight`);
    if (options.signal?.aborted) throw abortedError(options.what);
    this.busy = true;
    this.decoder.reset();
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    try {
      const answer = new Promise<T>((resolve, reject) => {
        this.waiter = { accept: options.accept ?? (() => true), resolve, reject, what: options.what };
        timer = setTimeout(() => {
          this.waiter = undefined;
          reject(timeoutError(options.what, options.timeoutMs));
        }, options.timeoutMs);
        onAbort = () => {
          this.waiter = undefined;
          reject(abortedError(options.what));
        };
        options.signal?.addEventListener('abort', onAbort, { once: true });
      });
      this.bytesOut += data.length;
      const written = this.transport.write(data);
      // A write failure and the answer race; either settles the request.
      return await Promise.race([answer, written.then(() => answer)]);
    } finally {
      clearTimeout(timer);
      if (onAbort) options.signal?.removeEventListener('abort', onAbort);
      this.waiter = undefined;
      this.busy = false;
    }
  }

  get closed(): boolean {
    return this.closedBy !== undefined;
  }

  /** Stops listening; the caller closes the transport. */
  detach(): void {
    for (const u of this.unsubscribe) u();
  }
}
