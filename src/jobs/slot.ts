/**
 * AWS IoT runs one bulk-registration task per account at a time. Registrars on any number of
 * hosts take turns through this slot in Redis: acquiring it hands out a fencing token (a
 * counter), the holder renews it while it works, and every write that must only come from the
 * current holder (recording the intent to start a task) is checked against the token in the
 * same Lua step. A holder that dies loses the slot when the TTL runs out.
 *
 * The slot is a courtesy, not the last line of defence: AWS itself refuses a second task, and
 * the registrar treats that refusal as "wait", never as a failure.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import { isAlive, packageRoot } from '../core/index.js';
import type { JournalKeys } from './keys.js';

type Reply = [string, ...string[]];
interface SlotCommands {
  provlineSlot(
    k1: string,
    k2: string,
    k3: string,
    op: string,
    value: string,
    ttl: string,
    ...kv: string[]
  ): Promise<Reply>;
}

export interface SlotOptions {
  ttlMs?: number;
  /** Poll interval while another registrar holds the slot. */
  pollMs?: number;
}

export class BulkSlot {
  private readonly redis: Redis & SlotCommands;
  private readonly ttlMs: number;
  private readonly pollMs: number;

  constructor(
    redis: Redis,
    private readonly keys: JournalKeys,
    options: SlotOptions = {},
  ) {
    if (!('provlineSlot' in redis)) {
      redis.defineCommand('provlineSlot', {
        numberOfKeys: 3,
        lua: readFileSync(join(packageRoot(), 'src', 'jobs', 'lua', 'slot-3.lua'), 'utf8'),
      });
    }
    this.redis = redis as Redis & SlotCommands;
    this.ttlMs = options.ttlMs ?? 15_000;
    this.pollMs = options.pollMs ?? 250;
  }

  private call(op: string, value: string, target = '', kv: string[] = []): Promise<Reply> {
    return this.redis.provlineSlot(
      this.keys.bulkSlot(),
      this.keys.bulkFence(),
      target || this.keys.bulkSlot(),
      op,
      value,
      String(this.ttlMs),
      ...kv,
    );
  }

  /** Waits for the slot; resolves with a held lease that renews itself until released. */
  async acquire(owner: string, signal?: AbortSignal, onWait?: (holder: string) => void): Promise<SlotLease> {
    for (;;) {
      signal?.throwIfAborted();
      const reply = await this.call('acquire', owner);
      if (reply[0] === 'ok') return new SlotLease(this, reply[1]!, this.ttlMs);
      const holder = reply[1] ?? '';
      // A holder on this host whose process is gone (SIGKILL, crash) frees the slot at once
      // rather than after its TTL; holders on other hosts are waited for.
      if (holderIsDeadHere(holder) && (await this.op('release', holder))) continue;
      onWait?.(holder);
      await sleep(this.pollMs, undefined, { signal });
    }
  }

  /** @internal */
  async op(op: 'renew' | 'release' | 'check', value: string): Promise<boolean> {
    return (await this.call(op, value))[0] === 'ok';
  }

  /** @internal */
  async fencedHset(value: string, key: string, fields: Record<string, string>): Promise<boolean> {
    return (await this.call('fenced-hset', value, key, Object.entries(fields).flat()))[0] === 'ok';
  }
}

/** Owners are "<host>/<pid>"; the slot value is "<fence>:<owner>". */
export function slotOwner(): string {
  return `${hostname()}/${process.pid}`;
}

function holderIsDeadHere(value: string): boolean {
  const owner = value.slice(value.indexOf(':') + 1);
  const slash = owner.lastIndexOf('/');
  if (slash < 0 || owner.slice(0, slash) !== hostname()) return false;
  const pid = Number(owner.slice(slash + 1));
  return Number.isInteger(pid) && pid > 0 && pid !== process.pid && !isAlive(pid, 'node');
}

export class SlotLease {
  private timer: NodeJS.Timeout | undefined;
  private lost = false;

  constructor(
    private readonly slot: BulkSlot,
    /** "<fence>:<owner>" */
    readonly value: string,
    ttlMs: number,
  ) {
    this.timer = setInterval(
      () => {
        this.slot.op('renew', this.value).then(
          (ok) => {
            if (!ok) this.lost = true;
          },
          () => undefined, // Redis briefly away: the next renewal (or the TTL) decides
        );
      },
      Math.max(100, Math.floor(ttlMs / 3)),
    );
    this.timer.unref();
  }

  get fence(): number {
    return Number(this.value.split(':', 1)[0]);
  }

  /** True while this lease still holds the slot (checked in Redis). */
  async valid(): Promise<boolean> {
    if (this.lost) return false;
    return this.slot.op('check', this.value);
  }

  /**
   * Writes `fields` to the hash `key` only if this lease still holds the slot, in one atomic
   * step; false (nothing written) if the slot was lost.
   */
  async write(key: string, fields: Record<string, string>): Promise<boolean> {
    if (this.lost) return false;
    return this.slot.fencedHset(this.value, key, fields);
  }

  async release(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.slot.op('release', this.value).catch(() => undefined);
  }
}
