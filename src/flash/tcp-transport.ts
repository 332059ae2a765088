/**
 * `tcp://host:port` to a ser2net raw-mode accepter (ser2net owns the tty and its line settings;
 * it must run with `chardelay: false`, see stack-notes.md §7). Nagle is off so a short command
 * leaves at once.
 */
import { connect, type Socket } from 'node:net';
import { ProvlineError, messageOf } from '../core/errors.js';
import { DEFAULT_BAUD, Listeners, type Transport, type TransportOptions } from './transport.js';

export function parseTcpTarget(target: string): { host: string; port: number } {
  const m = /^tcp:\/\/(\[[^\]]+\]|[^:/]+):(\d{1,5})\/?$/.exec(target);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) {
    throw new ProvlineError('TRANSPORT_BAD_TARGET', `"${target}" is not tcp://host:port`, {
      kind: 'invalid-input',
    });
  }
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

export async function openTcpTransport(target: string, options: TransportOptions = {}): Promise<Transport> {
  const { host, port } = parseTcpTarget(target);
  const timeoutMs = options.openTimeoutMs ?? 5_000;
  const socket = await new Promise<Socket>((resolve, reject) => {
    const s = connect({ host, port });
    const timer = setTimeout(() => fail(new Error(`no connection within ${timeoutMs} ms`)), timeoutMs);
    const onAbort = (): void => fail(new Error('aborted'));
    options.signal?.addEventListener('abort', onAbort, { once: true });
    function fail(err: Error): void {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      s.destroy();
      reject(
        new ProvlineError('TRANSPORT_OPEN_FAILED', `cannot connect to ${target}: ${messageOf(err)}`, {
          retryable: true,
          cause: err,
          hint: 'is ser2net running with a raw tcp accepter on that port?',
          details: { target },
        }),
      );
    }
    s.once('error', fail);
    s.once('connect', () => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      s.off('error', fail);
      s.setNoDelay(true);
      resolve(s);
    });
  });
  return new TcpTransport(target, options.baudRate ?? DEFAULT_BAUD, socket);
}

class TcpTransport implements Transport {
  private readonly data = new Listeners<[Buffer]>();
  private readonly closed = new Listeners<[Error | undefined]>();
  private closing = false;
  private lastError: Error | undefined;
  private open = true;

  constructor(
    readonly target: string,
    readonly baudRate: number,
    private readonly socket: Socket,
  ) {
    socket.on('data', (chunk: Buffer) => this.data.emit(chunk));
    socket.on('error', (err) => (this.lastError = err));
    socket.on('close', () => {
      this.open = false;
      this.closed.emit(
        this.closing ? undefined : (this.lastError ?? new Error('the bridge closed the connection')),
      );
    });
  }

  get isOpen(): boolean {
    return this.open;
  }

  write(data: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      if (!this.open) {
        reject(
          new ProvlineError('DEVICE_DISCONNECTED', `${this.target} is closed`, {
            details: { target: this.target },
          }),
        );
        return;
      }
      this.socket.write(data, (err) => {
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

  close(): Promise<void> {
    if (!this.open) return Promise.resolve();
    this.closing = true;
    return new Promise((resolve) => {
      this.socket.once('close', () => resolve());
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 500).unref();
    });
  }
}
