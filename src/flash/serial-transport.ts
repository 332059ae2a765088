/**
 * A local tty through `serialport`. The path is always explicit: `SerialPort.list()` needs udev,
 * which factory PCs and containers often lack (stack-notes.md §7).
 */
import { SerialPort } from 'serialport';
import { ProvlineError, messageOf } from '../core/errors.js';
import { DEFAULT_BAUD, Listeners, type Transport, type TransportOptions } from './transport.js';

export async function openSerialTransport(path: string, options: TransportOptions = {}): Promise<Transport> {
  const baudRate = options.baudRate ?? DEFAULT_BAUD;
  const port = new SerialPort({
    path,
    baudRate,
    rtscts: options.rtscts ?? false,
    autoOpen: false,
    hupcl: false,
  });
  await new Promise<void>((resolve, reject) => {
    port.open((err) => {
      if (err) {
        reject(
          new ProvlineError('TRANSPORT_OPEN_FAILED', `cannot open ${path}: ${err.message}`, {
            retryable: true,
            cause: err,
            hint: 'check the path, that nothing else holds the port, and that you may read and write it',
            details: { target: path },
          }),
        );
      } else resolve();
    });
  });
  return new SerialTransport(path, baudRate, port);
}

class SerialTransport implements Transport {
  private readonly data = new Listeners<[Buffer]>();
  private readonly closed = new Listeners<[Error | undefined]>();
  private closing = false;
  private closeError: Error | undefined;

  constructor(
    readonly target: string,
    readonly baudRate: number,
    private readonly port: SerialPort,
  ) {
    port.on('data', (chunk: Buffer) => this.data.emit(chunk));
    port.on('error', (err: Error) => (this.closeError ??= err));
    port.on('close', (err?: Error) =>
      this.closed.emit(this.closing ? undefined : (err ?? this.closeError ?? new Error('port closed'))),
    );
  }

  get isOpen(): boolean {
    return this.port.isOpen;
  }

  write(data: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      if (!this.port.isOpen) {
        reject(
          new ProvlineError('DEVICE_DISCONNECTED', `${this.target} is closed`, {
            details: { target: this.target },
          }),
        );
        return;
      }
      this.port.write(Buffer.from(data), (err) => {
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
    if (!this.port.isOpen) return Promise.resolve();
    this.closing = true;
    return new Promise((resolve) => this.port.close(() => resolve()));
  }
}
