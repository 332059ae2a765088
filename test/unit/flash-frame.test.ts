import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  FrameDecoder,
  MAX_PAYLOAD,
  PayloadError,
  PayloadReader,
  crc32,
  decodeFrame,
  encodeFrame,
  u32,
  type Frame,
} from '../../src/flash/protocol/index.js';

const frames = (events: ReturnType<FrameDecoder['push']>): Frame[] =>
  events.flatMap((e) => (e.kind === 'frame' ? [e.frame] : []));

describe('provline-serial-v1 framing', () => {
  it('uses CRC-32/ISO-HDLC (check value of "123456789")', () => {
    expect(crc32(Buffer.from('123456789'))).toBe(0xcbf43926);
  });

  it('lays a frame out as sync, type, seq, length, payload, CRC', () => {
    const raw = encodeFrame({ type: 0x11, seq: 7, payload: Buffer.from([1, 2, 3]) });
    expect([...raw.subarray(0, 6)]).toEqual([0xa5, 0x5a, 0x11, 7, 0, 3]);
    expect(raw.length).toBe(13);
    expect(raw.readUInt32BE(9)).toBe(crc32(raw.subarray(2, 9)));
    expect(decodeFrame(raw)).toEqual({ type: 0x11, seq: 7, payload: Buffer.from([1, 2, 3]) });
  });

  it('refuses payloads over the maximum', () => {
    expect(() => encodeFrame({ type: 1, seq: 0, payload: Buffer.alloc(MAX_PAYLOAD + 1) })).toThrow();
  });

  it('reports a damaged frame and still finds the good one after it', () => {
    const bad = encodeFrame({ type: 0x12, seq: 1, payload: Buffer.from('abcdef') });
    bad[8] = bad[8]! ^ 0x40;
    const good = encodeFrame({ type: 0x13, seq: 2, payload: Buffer.from([3]) });
    const events = new FrameDecoder().push(Buffer.concat([Buffer.from('noise'), bad, good]));
    expect(events.map((e) => e.kind)).toEqual(['bad-frame', 'frame']);
    expect(frames(events)[0]).toMatchObject({ type: 0x13, seq: 2 });
  });

  it('resynchronises when bytes are lost from the middle of a frame', () => {
    const first = encodeFrame({ type: 0x81, seq: 1, payload: Buffer.alloc(40, 7) });
    const lossy = Buffer.concat([first.subarray(0, 20), first.subarray(23)]);
    const next = encodeFrame({ type: 0x82, seq: 2, payload: Buffer.alloc(60, 9) });
    const d = new FrameDecoder();
    const got = frames([
      ...d.push(lossy),
      ...d.push(next),
      ...d.push(encodeFrame({ type: 0x83, seq: 3, payload: Buffer.alloc(0) })),
    ]);
    // The damaged frame is never delivered; the stream recovers by the following frame at the latest.
    expect(got.every((f) => f.type !== 0x81)).toBe(true);
    expect(got.map((f) => f.seq)).toContain(3);
  });

  it('property: any frames, cut into any chunks, decode back in order', () => {
    const frameArb = fc.record({
      type: fc.integer({ min: 0, max: 255 }),
      seq: fc.integer({ min: 0, max: 255 }),
      payload: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
    });
    fc.assert(
      fc.property(
        fc.array(frameArb, { maxLength: 8 }),
        fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1 }),
        (list, cuts) => {
          const stream = Buffer.concat(list.map(encodeFrame));
          const d = new FrameDecoder();
          const out: Frame[] = [];
          for (let off = 0, i = 0; off < stream.length; i++) {
            const n = cuts[i % cuts.length]!;
            out.push(...frames(d.push(stream.subarray(off, off + n))));
            off += n;
          }
          expect(out).toEqual(list);
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('PayloadReader', () => {
  it('reads fields and throws on short or overlong payloads', () => {
    const r = new PayloadReader(Buffer.concat([u32(70000), Buffer.from([3]), Buffer.from('SN1')]));
    expect(r.u32()).toBe(70000);
    expect(r.str8()).toBe('SN1');
    r.end();
    expect(() => new PayloadReader(Buffer.from([5, 1])).str8()).toThrow(PayloadError);
    const extra = new PayloadReader(Buffer.from([1, 2]));
    extra.u8();
    expect(() => extra.end()).toThrow(PayloadError);
  });
});
