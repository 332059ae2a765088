/**
 * Line-rate pacing. A pty moves bytes about 3000× faster than a 115200 8N1 UART
 * (stack-notes.md §7), so a simulator paces itself: each direction is a wire that carries
 * baud/10 bytes per second and is busy until the previous bytes have gone through.
 */

export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const realClock: Clock = {
  now: () => performance.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms))),
};

export class Wire {
  private freeAt = 0;
  /** Bytes per millisecond; undefined = unthrottled. */
  private readonly perMs: number | undefined;

  constructor(
    baudRate: number | undefined,
    private readonly clock: Clock = realClock,
  ) {
    this.perMs = baudRate ? baudRate / 10 / 1000 : undefined;
  }

  get throttled(): boolean {
    return this.perMs !== undefined;
  }

  /** When `bytes` handed over now will have crossed the wire (ms on the clock), and books it. */
  book(bytes: number): number {
    const now = this.clock.now();
    if (this.perMs === undefined) return now;
    const start = Math.max(now, this.freeAt);
    this.freeAt = start + bytes / this.perMs;
    return this.freeAt;
  }

  /** Slices of roughly 5 ms of line time, so output trickles out like a UART's. */
  sliceBytes(): number {
    return this.perMs === undefined ? Number.MAX_SAFE_INTEGER : Math.max(8, Math.floor(this.perMs * 5));
  }

  async until(t: number): Promise<void> {
    const wait = t - this.clock.now();
    if (wait > 0) await this.clock.sleep(wait);
  }
}
