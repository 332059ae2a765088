import { describe, expect, it } from 'vitest';
import {
  FaultPlan,
  FaultSpecError,
  corruptMiddle,
  dropMiddle,
  parseFaults,
} from '../../devices/core/faults.js';
import { Wire, type Clock } from '../../devices/core/line-rate.js';

describe('fault specs', () => {
  it('parses kinds, counts, categories and nth, with per-kind defaults', () => {
    expect(parseFaults('cme527, hang:*@identity, drop:2, unplug@write#3')).toEqual([
      { kind: 'reject', category: 'write', remaining: 1, skip: 0 },
      { kind: 'hang', category: 'identity', remaining: Infinity, skip: 0 },
      { kind: 'drop', category: 'read', remaining: 2, skip: 0 },
      { kind: 'unplug', category: 'write', remaining: 1, skip: 2 },
    ]);
    expect(parseFaults('')).toEqual([]);
    expect(parseFaults('noise')).toEqual([{ kind: 'noise', category: 'read', remaining: 1, skip: 0 }]);
    expect(parseFaults('impostor')).toEqual([
      { kind: 'impostor', category: 'connect', remaining: 1, skip: 0 },
    ]);
  });

  it('rejects what it does not understand, naming the problem', () => {
    expect(() => parseFaults('explode')).toThrow(FaultSpecError);
    expect(() => parseFaults('hang@nowhere')).toThrow(/category/);
    expect(() => parseFaults('hang:0')).toThrow(/start at 1/);
    expect(() => parseFaults('hang;drop')).toThrow(FaultSpecError);
  });

  it('fires on the nth matching command, as many times as asked', () => {
    const plan = new FaultPlan(parseFaults('hang:2@write#2'));
    expect([1, 2, 3, 4].map(() => plan.take('hang', 'write'))).toEqual([false, true, true, false]);
    expect(plan.take('hang', 'read')).toBe(false);
    expect(plan.fired).toHaveLength(2);
  });

  it('corrupts one bit without touching quotes or line ends, and drops three bytes', () => {
    const line = Buffer.from('AT%CMNG=0,1,0,"ab\r\ncd"');
    const bad = corruptMiddle(line);
    expect(bad.equals(line)).toBe(false);
    expect(bad.length).toBe(line.length);
    expect([...bad].filter((b) => b === 0x22).length).toBe(2);
    expect(dropMiddle(Buffer.from('0123456789')).toString()).toBe('0123489');
  });
});

describe('Wire (line-rate pacing)', () => {
  const fakeClock = (): Clock & { t: number } => {
    const c = { t: 0, now: () => c.t, sleep: (ms: number) => Promise.resolve(void (c.t += ms)) };
    return c;
  };

  it('books 11 520 bytes per second at 115200 8N1, back to back', () => {
    const clock = fakeClock();
    const w = new Wire(115_200, clock);
    expect(w.book(1152)).toBeCloseTo(100);
    expect(w.book(1152)).toBeCloseTo(200);
    clock.t = 1000;
    expect(w.book(11.52)).toBeCloseTo(1001);
  });

  it('is a no-op without a baud rate', () => {
    const clock = fakeClock();
    const w = new Wire(undefined, clock);
    expect(w.throttled).toBe(false);
    expect(w.book(1e6)).toBe(0);
  });
});
