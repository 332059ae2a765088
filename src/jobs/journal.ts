/**
 * The per-serial journal in Redis. Every state change is one Lua script (lua/*.lua, the number
 * in the name is the number of KEYS), so two workers can never both move a device, and a
 * crash between two writes cannot leave counts and devices disagreeing.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { ProvlineError } from '../core/errors.js';
import { packageRoot } from '../core/paths.js';
import { JournalKeys } from './keys.js';
import { ALLOWED_FROM, STATES, type DeviceState } from './states.js';

export interface DeviceRecord {
  serial: string;
  batch: string;
  thingName: string;
  line: number;
  state: DeviceState;
  createdAt: number;
  updatedAt: number;
  /** Epoch ms of entering each state. */
  at: Partial<Record<DeviceState, number>>;
  error?: { code: string; message: string; stage: string };
  /** Stage results: csrPem, publicKey, wrappedKey, kekId, certificateId, taskId, … */
  fields: Record<string, string>;
}

export type TransitionOutcome =
  | { status: 'ok'; from: DeviceState }
  | { status: 'same' }
  | { status: 'conflict'; current: DeviceState }
  | { status: 'missing' };

export interface TransitionRequest {
  batchId: string;
  serial: string;
  to: DeviceState;
  /** Narrow the allowed from-states further than the life-cycle table does. */
  from?: readonly DeviceState[];
  fields?: Record<string, string>;
}

export interface AcceptRow {
  serial: string;
  thingName: string;
  line: number;
}

type ScriptReply = [string, ...string[]];

interface JournalCommands {
  provlineTransition(k1: string, k2: string, k3: string, ...args: string[]): Promise<ScriptReply>;
  provlineAccept(k1: string, k2: string, k3: string, k4: string, ...args: string[]): Promise<ScriptReply>;
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
      redis.defineCommand('provlineTransition', { numberOfKeys: 3, lua: lua('transition-3.lua') });
      redis.defineCommand('provlineAccept', { numberOfKeys: 4, lua: lua('accept-4.lua') });
    }
    this.redis = redis as Redis & JournalCommands;
  }

  private readonly now: () => number;

  /**
   * Records devices of a batch as accepted, in chunks (each chunk atomic). Serials that belong
   * to another batch are refused (nothing of that chunk is written) unless `skipExisting`.
   */
  async accept(
    batchId: string,
    rows: AcceptRow[],
    options: { skipExisting?: boolean; chunk?: number } = {},
  ): Promise<{ accepted: number; skipped: string[] }> {
    const chunk = options.chunk ?? 500;
    let accepted = 0;
    const skipped: string[] = [];
    for (let i = 0; i < rows.length; i += chunk) {
      const args = rows.slice(i, i + chunk).flatMap((r) => [r.serial, r.thingName, String(r.line)]);
      const reply = await this.redis.provlineAccept(
        this.keys.counts(batchId),
        this.keys.serials(batchId),
        this.keys.batch(batchId),
        this.keys.device(''),
        batchId,
        String(this.now()),
        options.skipExisting ? 'skip-existing' : 'refuse-existing',
        ...args,
      );
      if (reply[0] === 'exists') {
        const [, serial, other, state] = reply;
        throw new ProvlineError(
          'SERIAL_ALREADY_SUBMITTED',
          `serial ${serial} already belongs to batch ${other} (state ${state})`,
          {
            kind: 'invalid-input',
            details: { serial, batch: other, state },
            hint: 'Use --skip-existing to leave such serials out of this batch.',
          },
        );
      }
      accepted += Number(reply[1]);
      skipped.push(...reply.slice(2));
    }
    return { accepted, skipped };
  }

  async transition(req: TransitionRequest): Promise<TransitionOutcome> {
    const from = (req.from ?? ALLOWED_FROM[req.to]).filter((s) => ALLOWED_FROM[req.to].includes(s));
    const fields = Object.entries(req.fields ?? {}).flat();
    const reply = await this.redis.provlineTransition(
      this.keys.device(req.serial),
      this.keys.counts(req.batchId),
      this.keys.failures(req.batchId),
      req.batchId,
      req.to,
      from.join(','),
      String(this.now()),
      req.to === 'failed' ? (req.fields?.errorCode ?? 'UNKNOWN') : '',
      ...fields,
    );
    switch (reply[0]) {
      case 'ok':
        return { status: 'ok', from: reply[1] as DeviceState };
      case 'same':
        return { status: 'same' };
      case 'conflict':
        return { status: 'conflict', current: reply[1] as DeviceState };
      default:
        return { status: 'missing' };
    }
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
    const h = await this.redis.hgetall(this.keys.device(serial));
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

  /** Devices per state for a batch (every state present, zeros included). */
  async counts(batchId: string): Promise<Record<DeviceState, number>> {
    const raw = await this.redis.hgetall(this.keys.counts(batchId));
    return Object.fromEntries(STATES.map((s) => [s, Number(raw[s] ?? 0)])) as Record<DeviceState, number>;
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
