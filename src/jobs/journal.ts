/**
 * The per-serial journal in Redis. Every state change is one Lua script (lua/*.lua, the number
 * in the name is the number of KEYS), so two workers can never both move a device, and a
 * crash between two writes cannot leave counts and devices disagreeing.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import {
  VISITS_KEPT,
  type DeviceRecord,
  type TransitionOutcome,
  type TransitionRequest,
  type VisitLog,
  ALLOWED_FROM,
  STATES,
  type DeviceState,
} from '../batch/index.js';
import { ProvlineError, packageRoot } from '../core/index.js';
import { JournalKeys } from './keys.js';

// The record and transition types are the pure journal model's (shared with the station).
export type { DeviceRecord, TransitionOutcome, TransitionRequest } from '../batch/index.js';

export type ChunkState = 'claimed' | 'written' | 'starting' | 'started' | 'done';

/** One registration chunk: a group of devices registered by one bulk task (or one by one). */
export interface Chunk {
  batchId: string;
  n: number;
  state: ChunkState;
  mode: string;
  /** In input-file line order (line N = serials[N-1]). */
  serials: string[];
  createdAt: number;
  /** inputKey, taskId, intentAt, fence, attempt, … */
  fields: Record<string, string>;
}

/** What a conditional chunk write found (Journal.setChunk). */
export type ChunkMoveOutcome =
  { status: 'ok' } | { status: 'missing' } | { status: 'conflict'; state: ChunkState; fence: string };

export interface AcceptRow {
  serial: string;
  thingName: string;
  line: number;
}

type ScriptReply = [string, ...string[]];

interface JournalCommands {
  provlineTransition(
    k1: string,
    k2: string,
    k3: string,
    k4: string,
    k5: string,
    ...args: string[]
  ): Promise<ScriptReply>;
  provlineClaim(
    k1: string,
    k2: string,
    k3: string,
    k4: string,
    k5: string,
    k6: string,
    ...args: string[]
  ): Promise<string[]>;
  provlineHeld(k1: string, ...args: string[]): Promise<string[]>;
  provlineVisit(k1: string, entry: string, at: string, kept: string): Promise<number>;
  provlineChunk(k1: string, ...args: string[]): Promise<ScriptReply>;
  provlineAccept(
    k1: string,
    k2: string,
    k3: string,
    k4: string,
    k5: string,
    k6: string,
    k7: string,
    ...args: string[]
  ): Promise<ScriptReply>;
}

const CORE_FIELDS = new Set([
  'serial',
  'batch',
  'thingName',
  'line',
  'state',
  'createdAt',
  'updatedAt',
  'errorCode',
  'errorMessage',
  'errorStage',
]);

export class Journal {
  readonly keys: JournalKeys;
  private readonly redis: Redis & JournalCommands;

  constructor(redis: Redis, options: { prefix?: string; now?: () => number } = {}) {
    this.keys = new JournalKeys(options.prefix);
    this.now = options.now ?? Date.now;
    const lua = (name: string): string =>
      readFileSync(join(packageRoot(), 'src', 'jobs', 'lua', name), 'utf8');
    if (!('provlineTransition' in redis)) {
      redis.defineCommand('provlineTransition', { numberOfKeys: 5, lua: lua('transition-5.lua') });
      redis.defineCommand('provlineAccept', { numberOfKeys: 7, lua: lua('accept-7.lua') });
      redis.defineCommand('provlineClaim', { numberOfKeys: 6, lua: lua('claim-6.lua') });
      redis.defineCommand('provlineHeld', { numberOfKeys: 1, lua: lua('held-1.lua') });
    }
    if (!('provlineVisit' in redis))
      redis.defineCommand('provlineVisit', { numberOfKeys: 1, lua: lua('visit-1.lua') });
    if (!('provlineChunk' in redis))
      redis.defineCommand('provlineChunk', { numberOfKeys: 1, lua: lua('chunk-1.lua') });
    this.redis = redis as Redis & JournalCommands;
  }

  private readonly now: () => number;

  /**
   * Records devices of a batch as accepted, in chunks (each chunk atomic). A serial that
   * belongs to another batch is refused (nothing of that chunk is written) unless
   * `skipExisting`; one that failed there before getting a certificate moves to this batch as
   * a retry (accept-7.lua), its record there kept in its history.
   */
  async accept(
    batchId: string,
    rows: AcceptRow[],
    options: { skipExisting?: boolean; chunk?: number } = {},
  ): Promise<{ accepted: number; skipped: string[]; retried: string[] }> {
    const chunk = options.chunk ?? 500;
    let accepted = 0;
    const skipped: string[] = [];
    const retried: string[] = [];
    for (let i = 0; i < rows.length; i += chunk) {
      const args = rows.slice(i, i + chunk).flatMap((r) => [r.serial, r.thingName, String(r.line)]);
      const reply = await this.redis.provlineAccept(
        this.keys.counts(batchId),
        this.keys.serials(batchId),
        this.keys.batch(batchId),
        this.keys.device(''),
        this.keys.batchRoot(),
        this.keys.inStatePrefix(batchId),
        this.keys.historyPrefix(),
        batchId,
        String(this.now()),
        options.skipExisting ? 'skip-existing' : 'refuse-existing',
        ...args,
      );
      if (reply[0] === 'exists') {
        const [, serial, other, state] = reply;
        throw alreadySubmitted([{ serial: serial ?? '', batch: other ?? '', state: state ?? '' }]);
      }
      accepted += Number(reply[1]);
      const nSkipped = Number(reply[2]);
      skipped.push(...reply.slice(3, 3 + nSkipped));
      retried.push(...reply.slice(3 + nSkipped));
    }
    return { accepted, skipped, retried };
  }

  /**
   * Which of these serials another batch already holds, and in what state (a read-only
   * check `submit` makes before writing anything, so a refused batch leaves no trace).
   */
  async existing(
    batchId: string,
    serials: string[],
  ): Promise<Array<{ serial: string; batch: string; state: DeviceState; hasCertificate: boolean }>> {
    const out: Array<{ serial: string; batch: string; state: DeviceState; hasCertificate: boolean }> = [];
    // One script call per thousand serials (held-1.lua) answers only for the serials held.
    for (let i = 0; i < serials.length; i += 1000) {
      const r = await this.redis.provlineHeld(this.keys.device(''), batchId, ...serials.slice(i, i + 1000));
      for (let j = 0; j + 3 < r.length; j += 4)
        out.push({
          serial: r[j]!,
          batch: r[j + 1]!,
          state: r[j + 2] as DeviceState,
          hasCertificate: r[j + 3] === '1',
        });
    }
    return out;
  }

  async transition(req: TransitionRequest): Promise<TransitionOutcome> {
    const reply = await this.redis.provlineTransition(...this.transitionArgs(req));
    return outcome(reply);
  }

  /** Many transitions in one round trip (each still atomic on its own). */
  async transitionMany(reqs: TransitionRequest[]): Promise<TransitionOutcome[]> {
    if (!reqs.length) return [];
    const p = this.redis.pipeline() as unknown as {
      provlineTransition(...args: string[]): void;
      exec(): Promise<Array<[Error | null, unknown]> | null>;
    };
    for (const r of reqs) p.provlineTransition(...this.transitionArgs(r));
    const replies = (await p.exec()) ?? [];
    return replies.map(([err, v]) => {
      if (err) throw err;
      return outcome(v as ScriptReply);
    });
  }

  private transitionArgs(req: TransitionRequest): [string, string, string, string, string, ...string[]] {
    const from = (req.from ?? ALLOWED_FROM[req.to]).filter((s) => ALLOWED_FROM[req.to].includes(s));
    const fields = Object.entries(req.fields ?? {}).flat();
    return [
      this.keys.device(req.serial),
      this.keys.counts(req.batchId),
      this.keys.failures(req.batchId),
      this.keys.inStatePrefix(req.batchId),
      this.keys.certificates(),
      req.batchId,
      req.to,
      from.join(','),
      String(this.now()),
      req.to === 'failed' ? (req.fields?.errorCode ?? 'UNKNOWN') : '',
      !req.when ? '' : 'absent' in req.when ? `!${req.when.absent}` : `${req.when.field}=${req.when.equals}`,
      ...fields,
    ];
  }

  /** Marks a device failed with a stable code and AWS's or the device's own message. */
  fail(
    batchId: string,
    serial: string,
    error: { code: string; message: string; stage: string },
  ): Promise<TransitionOutcome> {
    return this.transition({
      batchId,
      serial,
      to: 'failed',
      fields: { errorCode: error.code, errorMessage: error.message, errorStage: error.stage },
    });
  }

  async get(serial: string): Promise<DeviceRecord | undefined> {
    return toRecord(await this.redis.hgetall(this.keys.device(serial)));
  }

  /**
   * The device's records in earlier batches, newest first (kept when a serial that failed
   * without a certificate moved to a new batch; at most ten).
   */
  async history(serial: string): Promise<DeviceRecord[]> {
    const raw = await this.redis.lrange(this.keys.history(serial), 0, -1);
    return raw.flatMap((j) => {
      try {
        const rec = toRecord(JSON.parse(j) as Record<string, string>);
        return rec ? [rec] : [];
      } catch {
        return [];
      }
    });
  }

  /** The serial a certificate was issued to, from the index the transitions keep. */
  async serialOfCertificate(certificateId: string): Promise<string | undefined> {
    return (await this.redis.hget(this.keys.certificates(), certificateId)) ?? undefined;
  }

  /**
   * Keeps one visit's log: the newest `VISITS_KEPT` visits of a serial, each already capped,
   * newest first by when the visit began (a visit synced late from a station's cache goes where
   * its time puts it). The same log kept twice is kept once (visit-1.lua).
   */
  async logVisit(serial: string, log: VisitLog): Promise<void> {
    await this.redis.provlineVisit(
      this.keys.visits(serial),
      JSON.stringify(log),
      String(Math.floor(log.at)),
      String(VISITS_KEPT),
    );
  }

  /** The logs of the serial's last visits, newest first. */
  async visits(serial: string): Promise<VisitLog[]> {
    const raw = await this.redis.lrange(this.keys.visits(serial), 0, -1);
    return raw.flatMap((j) => {
      try {
        return [JSON.parse(j) as VisitLog];
      } catch {
        return [];
      }
    });
  }

  /** Records for many serials in one round trip (undefined where unknown). */
  async getMany(serials: string[]): Promise<Array<DeviceRecord | undefined>> {
    if (!serials.length) return [];
    const p = this.redis.pipeline();
    for (const s of serials) p.hgetall(this.keys.device(s));
    const replies = (await p.exec()) ?? [];
    return replies.map(([err, h]) => {
      if (err) throw err;
      return toRecord(h as Record<string, string>);
    });
  }

  /** Up to `count` serials of a batch currently in `state` (no order). */
  async inState(batchId: string, state: DeviceState, count?: number): Promise<string[]> {
    const key = this.keys.inState(batchId, state);
    if (count === undefined) return this.redis.smembers(key);
    return await this.redis.srandmember(key, count);
  }

  /**
   * Claims up to `max` keyed devices into a new registration chunk (claim-6.lua); undefined
   * when none is keyed.
   */
  async claimChunk(batchId: string, max: number, mode: string): Promise<Chunk | undefined> {
    const reply = await this.redis.provlineClaim(
      this.keys.inStatePrefix(batchId),
      this.keys.counts(batchId),
      this.keys.chunkSeq(batchId),
      this.keys.chunks(batchId),
      this.keys.chunk(batchId, ''),
      this.keys.device(''),
      batchId,
      String(max),
      String(this.now()),
      mode,
    );
    if (!reply.length) return undefined;
    return this.chunk(batchId, Number(reply[0]));
  }

  async chunk(batchId: string, n: number): Promise<Chunk | undefined> {
    const h = await this.redis.hgetall(this.keys.chunk(batchId, n));
    if (!h.n) return undefined;
    const { n: num, state, mode, serials, createdAt, ...rest } = h;
    return {
      batchId,
      n: Number(num),
      state: (state ?? 'claimed') as ChunkState,
      mode: mode ?? 'bulk',
      serials: serials ? serials.split('\n') : [],
      createdAt: Number(createdAt),
      fields: rest,
    };
  }

  /**
   * Writes fields of a chunk (its next state among them) in one Lua step (chunk-1.lua), only
   * while the chunk is in one of `expect.from` and carries `expect.fence` (each unchecked when
   * not given). A registrar that lost the chunk gets `conflict` and changes nothing.
   */
  async setChunk(
    batchId: string,
    n: number,
    fields: Record<string, string>,
    expect: { from?: readonly ChunkState[]; fence?: number } = {},
  ): Promise<ChunkMoveOutcome> {
    const [status, state, fence] = await this.redis.provlineChunk(
      this.keys.chunk(batchId, n),
      (expect.from ?? []).join(','),
      expect.fence === undefined ? '' : String(expect.fence),
      ...Object.entries(fields).flat(),
    );
    if (status === 'ok') return { status: 'ok' };
    if (status === 'missing') return { status: 'missing' };
    return { status: 'conflict', state: (state ?? '') as ChunkState, fence: fence ?? '' };
  }

  /** Chunks of a batch not yet done, oldest first (one round trip for the states). */
  async openChunks(batchId: string): Promise<Chunk[]> {
    const ns = await this.redis.lrange(this.keys.chunks(batchId), 0, -1);
    if (!ns.length) return [];
    const p = this.redis.pipeline();
    for (const n of ns) p.hget(this.keys.chunk(batchId, n), 'state');
    const states = (await p.exec()) ?? [];
    const out: Chunk[] = [];
    for (let i = 0; i < ns.length; i++) {
      if (states[i]?.[1] === 'done') continue;
      const c = await this.chunk(batchId, Number(ns[i]));
      if (c) out.push(c);
    }
    return out;
  }

  /** Sets a field on a device without changing its state (notes such as an intent). */
  async note(serial: string, fields: Record<string, string>): Promise<void> {
    await this.redis.hset(this.keys.device(serial), fields);
  }

  async forget(serial: string, ...fields: string[]): Promise<void> {
    if (fields.length) await this.redis.hdel(this.keys.device(serial), ...fields);
  }
  /** Devices per state for a batch (every state present, zeros included). */
  async counts(batchId: string): Promise<Record<DeviceState, number>> {
    const raw = await this.redis.hgetall(this.keys.counts(batchId));
    return Object.fromEntries(STATES.map((s) => [s, Number(raw[s] ?? 0)])) as Record<DeviceState, number>;
  }

  /** When a device of the batch last changed state (epoch ms), if ever. */
  async progressAt(batchId: string): Promise<number | undefined> {
    const t = await this.redis.hget(this.keys.counts(batchId), 'progressAt');
    return t === null ? undefined : Number(t);
  }

  async failuresByCode(batchId: string): Promise<Record<string, number>> {
    const raw = await this.redis.hgetall(this.keys.failures(batchId));
    const out: Record<string, number> = {};
    for (const [code, n] of Object.entries(raw)) if (Number(n) > 0) out[code] = Number(n);
    return out;
  }

  /** Serials of a batch in plan order, a page at a time. */
  serials(batchId: string, start: number, count: number): Promise<string[]> {
    return this.redis.lrange(this.keys.serials(batchId), start, start + count - 1);
  }
}

function outcome(reply: ScriptReply): TransitionOutcome {
  switch (reply[0]) {
    case 'ok':
      return { status: 'ok', from: reply[1] as DeviceState };
    case 'same':
      return { status: 'same' };
    case 'conflict':
      return { status: 'conflict', current: reply[1] as DeviceState };
    case 'unmet':
      return { status: 'unmet', current: reply[1] as DeviceState };
    default:
      return { status: 'missing' };
  }
}

export function alreadySubmitted(
  found: Array<{ serial: string; batch: string; state: string }>,
  /** How many there are in all, when `found` lists only the first few. */
  total = found.length,
): ProvlineError {
  const first = found[0]!;
  const more = total > 1 ? ` (and ${total - 1} more)` : '';
  return new ProvlineError(
    'SERIAL_ALREADY_SUBMITTED',
    `serial ${first.serial} already belongs to batch ${first.batch} (state ${first.state})${more}; nothing was queued`,
    {
      kind: 'invalid-input',
      details: { count: total, serials: found.slice(0, 20) },
      hint: 'Use --skip-existing to leave such serials out of this batch.',
    },
  );
}

function toRecord(h: Record<string, string>): DeviceRecord | undefined {
  if (!h.state) return undefined;
  const at: Partial<Record<DeviceState, number>> = {};
  const fields: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) {
    if (k.startsWith('at:')) at[k.slice(3) as DeviceState] = Number(v);
    else if (!CORE_FIELDS.has(k)) fields[k] = v;
  }
  return {
    serial: h.serial!,
    batch: h.batch!,
    thingName: h.thingName!,
    line: Number(h.line),
    state: h.state as DeviceState,
    createdAt: Number(h.createdAt),
    updatedAt: Number(h.updatedAt),
    at,
    ...(h.errorCode
      ? { error: { code: h.errorCode, message: h.errorMessage ?? '', stage: h.errorStage ?? '' } }
      : {}),
    fields,
  };
}
