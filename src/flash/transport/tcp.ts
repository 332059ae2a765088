/**
 * `tcp://host:port` to a ser2net raw-mode accepter (ser2net owns the tty and its line settings;
 * it must run with `chardelay: false`, see stack-notes.md §7). Nagle is off so a short command
 * leaves at once.
 */
import { connect, type Socket } from 'node:net';
import { ProvlineError, messageOf } from '../../core/index.js';
import { StreamTransport } from './stream.js';
import { DEFAULT_BAUD, type Transport, type TransportOptions } from './transport.js';

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

class TcpTransport extends StreamTransport {
  private open = true;

  constructor(
    target: string,
    baudRate: number,
    private readonly socket: Socket,
  ) {
    super(target, baudRate);
    socket.on('data', (chunk: Buffer) => this.emitData(chunk));
    socket.on('error', (err) => this.noteError(err));
    socket.on('close', () => {
      this.open = false;
      this.emitClosed('the bridge closed the connection');
    });
  }

  get isOpen(): boolean {
    return this.open;
  }

  protected rawWrite(data: Buffer, done: (err?: Error | null) => void): void {
    this.socket.write(data, done);
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
