/**
 * The station's log of one device visit: every command the station wrote and every answer the
 * device gave, as transcript lines (protocol/transcript.ts: no key material, ever), with their
 * time since the visit began. Bounded while it runs: the first and the last lines are kept and
 * the middle only counted, so a visit that loops on retries cannot grow it without end.
 */
import { VISIT_LINES_MAX, capLines, type ExchangeLine, type VisitLog } from '../../batch/index.js';
import type { DeviceState } from '../../batch/index.js';
import type { Transcriber } from '../protocol/transcript.js';
import type { Transport } from '../transport/transport.js';
import type { DeviceResult } from './events.js';

export class ExchangeRecorder {
  private readonly head: ExchangeLine[] = [];
  private tail: ExchangeLine[] = [];
  private dropped = 0;
  private unsubscribe: (() => void) | undefined;

  constructor(
    private readonly transcriber: Transcriber,
    /** Monotonic ms, and the visit's start on that clock. */
    private readonly clock: () => number,
    private readonly startedAt: number,
  ) {}

  /** Listens to the device's answers on `transport` until `detach`. */
  attach(transport: Transport): void {
    this.unsubscribe = transport.onData((chunk) => this.add('<', this.transcriber.received(chunk)));
  }

  detach(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /** The same link, with what the station writes noted on its way out. */
  tap(transport: Transport): Transport {
    const write = (data: Uint8Array): Promise<void> => {
      this.add('>', this.transcriber.sent(data));
      return transport.write(data);
    };
    return {
      get target() {
        return transport.target;
      },
      get baudRate() {
        return transport.baudRate;
      },
      get isOpen() {
        return transport.isOpen;
      },
      write,
      onData: (listener) => transport.onData(listener),
      onClose: (listener) => transport.onClose(listener),
      close: () => transport.close(),
    };
  }

  note(text: string): void {
    this.add('!', [text]);
  }

  lines(): { lines: ExchangeLine[]; omitted: number } {
    const capped = capLines([...this.head, ...this.tail]);
    return { lines: capped.lines, omitted: capped.omitted + this.dropped };
  }

  private add(dir: ExchangeLine['dir'], texts: string[]): void {
    const t = Math.round(this.clock() - this.startedAt);
    const half = VISIT_LINES_MAX / 2;
    for (const text of texts) {
      const line = { t, dir, text };
      if (this.head.length < half) this.head.push(line);
      else {
        this.tail.push(line);
        if (this.tail.length > half * 2) {
          this.dropped += this.tail.length - half;
          this.tail = this.tail.slice(-half);
        }
      }
    }
  }
}

/** The journal states a visit recorded, from how it ended. */
export function statesRecorded(r: DeviceResult): DeviceState[] {
  if (r.recorded === 'none') return [];
  if (r.outcome === 'failed') return ['failed'];
  if (r.outcome === 'verified' || r.outcome === 'already')
    return ['flashed', 'verified', ...(r.connected ? (['connected'] as const) : [])];
  return [];
}

/** The log entry of a finished visit. */
export function visitLog(
  r: DeviceResult,
  o: { stationId: string; driver: string; startedAtEpoch: number; exchange: ExchangeRecorder },
): VisitLog {
  const { lines, omitted } = o.exchange.lines();
  return {
    v: 1,
    at: o.startedAtEpoch,
    stationId: o.stationId,
    port: r.port,
    driver: o.driver,
    ...(r.batchId ? { batchId: r.batchId } : {}),
    outcome: r.outcome,
    ...(r.code ? { code: r.code } : {}),
    message: r.message,
    ms: r.ms,
    recorded: statesRecorded(r),
    lines,
    omitted,
  };
}
