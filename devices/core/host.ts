/**
 * Runs one device model on a serial port (usually one end of a socat pty pair): paces both
 * directions at the line rate, splits the inbound stream into commands, injects faults, and
 * writes the answers back. Commands are handled strictly one at a time, like firmware does.
 */
import { SerialPort } from 'serialport';
import { FaultPlan, corruptMiddle, dropMiddle, type Category, type FaultRule } from './faults.js';
import { Wire } from './line-rate.js';

export interface DeviceModel {
  /** Splits received bytes into complete commands (buffers partial ones). */
  split(chunk: Buffer): Buffer[];
  categorize(command: Buffer): Category;
  /** Runs one command (as an impostor when that fault fired); returns the bytes to answer with, if any. */
  handle(command: Buffer, fault?: { impostor: boolean }): Promise<Buffer | undefined>;
  /** The answer a `reject` fault gives this command, or undefined if the fault does not apply to it. No side effects. */
  rejection(command: Buffer): Buffer | undefined;
  /** Whether an `impostor` fault applies to this command (a claim provisioning request). No side effects. */
  impersonates?(command: Buffer): boolean;
  /** The device goes away (unplugged, simulator stopped): drop what it holds open. */
  close?(): void;
}

export interface HostOptions {
  /** The device's end of the link, e.g. a socat pty link. */
  port: string;
  /** Line rate to pace at; undefined or 0 = as fast as the pty goes. */
  baudRate?: number;
  faults?: FaultRule[];
  /** One line per event, for `--verbose`. */
  log?: (line: string) => void;
}

export interface HostStats {
  bytesIn: number;
  bytesOut: number;
  commands: number;
}

export class SimulatorHost {
  readonly faults: FaultPlan;
  readonly stats: HostStats = { bytesIn: 0, bytesOut: 0, commands: 0 };
  /** Resolves when an `unplug` fault has closed the port. */
  readonly unplugged: Promise<void>;
  private markUnplugged!: () => void;
  private readonly inWire: Wire;
  private readonly outWire: Wire;
  private chain: Promise<void> = Promise.resolve();
  private stopped = false;

  private constructor(
    private readonly port: SerialPort,
    private readonly model: DeviceModel,
    private readonly options: HostOptions,
  ) {
    this.faults = new FaultPlan(options.faults ?? []);
    this.inWire = new Wire(options.baudRate || undefined);
    this.outWire = new Wire(options.baudRate || undefined);
    this.unplugged = new Promise((resolve) => (this.markUnplugged = resolve));
    port.on('data', (chunk: Buffer) => {
      this.chain = this.chain
        .then(() => this.receive(chunk))
        .catch((e: unknown) => this.log(`error: ${String(e)}`));
    });
    port.on('error', (e: Error) => this.log(`port error: ${e.message}`));
  }

  static async attach(model: DeviceModel, options: HostOptions): Promise<SimulatorHost> {
    const port = new SerialPort({
      path: options.port,
      baudRate: options.baudRate || 115_200,
      autoOpen: false,
      hupcl: false,
    });
    await new Promise<void>((resolve, reject) => port.open((err) => (err ? reject(err) : resolve())));
    return new SimulatorHost(port, model, options);
  }

  /** Stops answering and closes the port. */
  async close(): Promise<void> {
    this.stopped = true;
    this.model.close?.();
    if (this.port.isOpen) await new Promise<void>((resolve) => this.port.close(() => resolve()));
  }

  get running(): boolean {
    return !this.stopped;
  }

  private log(line: string): void {
    this.options.log?.(line);
  }

  private async receive(chunk: Buffer): Promise<void> {
    if (this.stopped) return;
    this.stats.bytesIn += chunk.length;
    // The bytes are only "here" once the line has carried them.
    await this.inWire.until(this.inWire.book(chunk.length));
    for (const command of this.model.split(chunk)) {
      if (this.stopped) return;
      await this.process(command);
    }
  }

  private async process(received: Buffer): Promise<void> {
    this.stats.commands++;
    const category = this.model.categorize(received);
    const f = this.faults;
    if (f.take('unplug', category)) {
      this.log(`fault: unplug during ${category}`);
      await this.close();
      this.markUnplugged();
      return;
    }
    if (f.take('hang', category)) {
      this.log(`fault: hang on ${category}`);
      return;
    }
    const rejection = this.model.rejection(received);
    if (rejection && f.take('reject', category)) {
      this.log(`fault: reject ${category}`);
      await this.send(rejection);
      return;
    }
    const command = f.take('corrupt', category) ? corruptMiddle(received) : received;
    if (command !== received) this.log(`fault: corrupted ${category} command`);
    const impostor = this.model.impersonates?.(command) === true && f.take('impostor', category);
    if (impostor) this.log(`fault: impostor on ${category}: presents another serial`);
    let answer = await this.model.handle(command, impostor ? { impostor } : undefined);
    if (!answer?.length) return;
    if (f.take('drop', category)) {
      this.log(`fault: dropped bytes of the ${category} answer`);
      answer = dropMiddle(answer);
    }
    if (f.take('noise', category)) {
      this.log(`fault: flipped a bit of the ${category} answer`);
      answer = corruptMiddle(answer);
    }
    await this.send(answer);
  }

  private async send(answer: Buffer): Promise<void> {
    const slice = this.outWire.sliceBytes();
    for (let off = 0; off < answer.length && !this.stopped; off += slice) {
      const part = answer.subarray(off, off + slice);
      await this.outWire.until(this.outWire.book(part.length));
      if (!this.port.isOpen) return;
      await new Promise<void>((resolve) => this.port.write(part, () => resolve()));
      this.stats.bytesOut += part.length;
    }
  }
}
