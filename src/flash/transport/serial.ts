/**
 * A local tty through `serialport`. The path is always explicit: `SerialPort.list()` needs udev,
 * which factory PCs and containers often lack (stack-notes.md §7).
 */
import { SerialPort } from 'serialport';
import { ProvlineError } from '../../core/index.js';
import { StreamTransport } from './stream.js';
import { DEFAULT_BAUD, type Transport, type TransportOptions } from './transport.js';

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

class SerialTransport extends StreamTransport {
  constructor(
    target: string,
    baudRate: number,
    private readonly port: SerialPort,
  ) {
    super(target, baudRate);
    port.on('data', (chunk: Buffer) => this.emitData(chunk));
    port.on('error', (err: Error) => this.noteError(err));
    port.on('close', (err?: Error) => this.emitClosed('port closed', err ?? undefined));
  }

  get isOpen(): boolean {
    return this.port.isOpen;
  }

  protected rawWrite(data: Buffer, done: (err?: Error | null) => void): void {
    this.port.write(data, done);
  }

  close(): Promise<void> {
    if (!this.port.isOpen) return Promise.resolve();
    this.closing = true;
    return new Promise((resolve) => this.port.close(() => resolve()));
  }
}
