/** Topic rules and the packet framer of the MQTT endpoint (pure). */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FrameError, Framer } from '../../emulator/mqtt/frames.js';
import { filterMatches, topicProblem } from '../../emulator/mqtt/topics.js';

describe('topic names and filters', () => {
  it('+ matches one level, # the rest (and the parent level)', () => {
    expect(filterMatches('a/+/c', 'a/b/c')).toBe(true);
    expect(filterMatches('a/+/c', 'a/b/d')).toBe(false);
    expect(filterMatches('a/#', 'a')).toBe(true);
    expect(filterMatches('a/#', 'a/b/c')).toBe(true);
    expect(filterMatches('a/b', 'a/b/c')).toBe(false);
    expect(filterMatches('+/+', 'a/b')).toBe(true);
  });

  it('wildcards at the first level do not match $ topics', () => {
    expect(filterMatches('#', '$aws/events/presence/connected/x')).toBe(false);
    expect(filterMatches('+/events/#', '$aws/events/x')).toBe(false);
    expect(filterMatches('$aws/events/#', '$aws/events/presence/connected/x')).toBe(true);
  });

  it("AWS's limits: 256 bytes, 7 slashes; wildcards only in filters and whole levels", () => {
    expect(topicProblem('a/b', 'name')).toBeUndefined();
    expect(topicProblem('x'.repeat(257), 'name')).toMatch(/at most 256/);
    expect(topicProblem('1/2/3/4/5/6/7/8', 'name')).toBeUndefined();
    expect(topicProblem('1/2/3/4/5/6/7/8/9', 'name')).toMatch(/at most 7/);
    expect(topicProblem('a/+', 'name')).toMatch(/may not contain the wildcards/);
    expect(topicProblem('a/#/b', 'filter')).toMatch(/last one/);
    expect(topicProblem('a/b+', 'filter')).toMatch(/whole level/);
    expect(topicProblem('', 'filter')).toMatch(/empty/);
  });
});

describe('framer', () => {
  const packet = (body: number[]): Buffer => Buffer.from([0x30, body.length, ...body]);

  it('splits a stream into whole packets however it is chunked', () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 100 }), { maxLength: 10 }),
        fc.integer({ min: 1, max: 50 }),
        (bodies, step) => {
          const stream = Buffer.concat(bodies.map(packet));
          const f = new Framer(1000);
          const out: Buffer[] = [];
          for (let i = 0; i < stream.length; i += step) out.push(...f.push(stream.subarray(i, i + step)));
          expect(out.map((b) => b.toString('hex'))).toEqual(bodies.map((b) => packet(b).toString('hex')));
        },
      ),
    );
  });

  it('refuses an announced size over the limit before buffering it, and a 5-byte length', () => {
    const f = new Framer(100);
    expect(() => f.push(Buffer.from([0x30, 0xff, 0xff, 0x7f]))).toThrow(FrameError);
    expect(() => new Framer(100).push(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]))).toThrow(
      /longer than 4 bytes/,
    );
  });
});
