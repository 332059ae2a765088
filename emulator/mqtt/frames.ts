/**
 * Splits a byte stream into whole MQTT control packets (pure). The fixed header's
 * remaining length is read here, before the codec sees anything, so a peer that announces
 * a huge packet is refused at once instead of being buffered.
 */

export class FrameError extends Error {
  constructor(
    readonly code: 'malformed' | 'too-large',
    message: string,
    readonly size?: number,
  ) {
    super(message);
  }
}

export class Framer {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(private readonly maxPacketBytes: number) {}

  /** Whole packets completed by `chunk`, in order; throws FrameError on a bad header. */
  push(chunk: Buffer): Buffer[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: Buffer[] = [];
    for (;;) {
      if (this.buffered < 2) break;
      const buf = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
      this.chunks = [buf];
      let length = 0;
      let multiplier = 1;
      let i = 1;
      let complete = false;
      for (; i <= 4 && i < buf.length; i++) {
        const b = buf[i]!;
        length += (b & 0x7f) * multiplier;
        multiplier *= 128;
        if (!(b & 0x80)) {
          complete = true;
          break;
        }
      }
      if (!complete) {
        if (i > 4) throw new FrameError('malformed', 'the remaining-length field is longer than 4 bytes');
        break;
      }
      const total = i + 1 + length;
      if (total > this.maxPacketBytes)
        throw new FrameError(
          'too-large',
          `the packet announces ${total} bytes; the stand-in accepts at most ${this.maxPacketBytes}`,
          total,
        );
      if (buf.length < total) break;
      out.push(buf.subarray(0, total));
      const rest = buf.subarray(total);
      this.chunks = rest.length ? [rest] : [];
      this.buffered = rest.length;
    }
    return out;
  }
}
