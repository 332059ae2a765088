/**
 * The stand-in's state: named collections of plain JSON records, kept in memory and made
 * durable by a write-ahead log.
 *
 * Durability (docs/emulator.md "Persistence"):
 * - Every committed transaction is one line of `wal.ndjson`, appended with a synchronous
 *   write() *before* the HTTP response is sent, so a SIGKILL of the process loses nothing
 *   that a client saw acknowledged (the bytes are in the kernel's page cache).
 * - fdatasync policy `interval` (default) syncs at most every 200 ms; `always` syncs every
 *   commit; `never` leaves it to the kernel. Only a power cut can lose the unsynced tail.
 * - A torn last line (power cut mid-write) is dropped at replay: transactions are atomic.
 * - At open, after replay, the state is rewritten as `snapshot.json` (tmp + fsync + rename)
 *   and the log starts empty; the same compaction runs when the log passes `compactBytes`.
 *
 * Records are treated as immutable: callers `put` a new object instead of editing one, which
 * is what lets a failed transaction be undone in memory.
 *
 * Relations ("pair" collections, key `a\n b`) get in-memory indexes both ways so that
 * "which policies are attached to this cert" and "which certs carry this policy" are O(1).
 */
import {
  closeSync,
  existsSync,
  fdatasyncSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';

export type FsyncPolicy = 'always' | 'interval' | 'never';

type Change = [collection: string, key: string, value: unknown];

export interface StoreOptions {
  dir: string;
  fsync?: FsyncPolicy;
  /** Compact (snapshot + empty log) once the log is larger than this. */
  compactBytes?: number;
  /** Names of pair collections to index (keys are `a\nb`). */
  relations?: readonly string[];
}

const SNAPSHOT_VERSION = 1;

export class Store {
  private readonly data = new Map<string, Map<string, unknown>>();
  private readonly indexes = new Map<
    string,
    { byA: Map<string, Set<string>>; byB: Map<string, Set<string>> }
  >();
  private readonly walPath: string;
  private readonly snapshotPath: string;
  private readonly fsyncPolicy: FsyncPolicy;
  private readonly compactBytes: number;
  private fd: number;
  private walBytes = 0;
  private dirty = false;
  private syncTimer: NodeJS.Timeout | undefined;
  private pending: Array<{ change: Change; prev: unknown }> | undefined;

  constructor(options: StoreOptions) {
    mkdirSync(options.dir, { recursive: true, mode: 0o700 });
    this.walPath = join(options.dir, 'wal.ndjson');
    this.snapshotPath = join(options.dir, 'snapshot.json');
    this.fsyncPolicy = options.fsync ?? 'interval';
    this.compactBytes = options.compactBytes ?? 64 * 1024 * 1024;
    for (const r of options.relations ?? []) this.indexes.set(r, { byA: new Map(), byB: new Map() });
    this.load();
    this.fd = openSync(this.walPath, 'a', 0o600);
    this.compact();
    if (this.fsyncPolicy === 'interval') {
      this.syncTimer = setInterval(() => this.sync(), 200);
      this.syncTimer.unref();
    }
  }

  get<T>(collection: string, key: string): T | undefined {
    return this.data.get(collection)?.get(key) as T | undefined;
  }

  has(collection: string, key: string): boolean {
    return this.data.get(collection)?.has(key) ?? false;
  }

  values<T>(collection: string): T[] {
    return [...(this.data.get(collection)?.values() ?? [])] as T[];
  }

  size(collection: string): number {
    return this.data.get(collection)?.size ?? 0;
  }

  /** Puts a record (inside a transaction it is logged at commit, otherwise at once). */
  put(collection: string, key: string, value: unknown): void {
    this.change([collection, key, value]);
  }

  del(collection: string, key: string): void {
    if (this.has(collection, key)) this.change([collection, key, null]);
  }

  /** Pair relations. */
  link(relation: string, a: string, b: string): void {
    if (!this.has(relation, `${a}\n${b}`)) this.put(relation, `${a}\n${b}`, 1);
  }

  unlink(relation: string, a: string, b: string): void {
    this.del(relation, `${a}\n${b}`);
  }

  linked(relation: string, a: string, b: string): boolean {
    return this.has(relation, `${a}\n${b}`);
  }

  /** The b's linked to a. */
  rightOf(relation: string, a: string): string[] {
    return [...(this.indexes.get(relation)?.byA.get(a) ?? [])];
  }

  /** The a's linked to b. */
  leftOf(relation: string, b: string): string[] {
    return [...(this.indexes.get(relation)?.byB.get(b) ?? [])];
  }

  countRightOf(relation: string, a: string): number {
    return this.indexes.get(relation)?.byA.get(a)?.size ?? 0;
  }

  countLeftOf(relation: string, b: string): number {
    return this.indexes.get(relation)?.byB.get(b)?.size ?? 0;
  }

  /**
   * Runs `fn` as one atomic transaction: all its changes reach the log as one line, or, if it
   * throws, none do and memory is restored. An inner call is a savepoint: if it throws, its
   * own changes are undone and the outer transaction goes on.
   */
  transaction<T>(fn: () => T): T {
    if (this.pending) {
      const mark = this.pending.length;
      try {
        return fn();
      } catch (e) {
        this.undo(this.pending.splice(mark));
        throw e;
      }
    }
    this.pending = [];
    try {
      const result = fn();
      const changes = this.pending.map((p) => p.change);
      this.pending = undefined;
      if (changes.length) this.append(changes);
      return result;
    } catch (e) {
      const undo = this.pending ?? [];
      this.pending = undefined;
      this.undo(undo);
      throw e;
    }
  }

  private undo(changes: Array<{ change: Change; prev: unknown }>): void {
    for (let i = changes.length - 1; i >= 0; i--) {
      const { change, prev } = changes[i]!;
      this.applyInMemory([change[0], change[1], prev === undefined ? null : prev]);
    }
  }

  /** Flushes the log to disk now. */
  sync(): void {
    if (!this.dirty) return;
    this.dirty = false;
    fdatasyncSync(this.fd);
  }

  close(): void {
    if (this.syncTimer) clearInterval(this.syncTimer);
    this.dirty = true;
    this.sync();
    closeSync(this.fd);
  }

  private change(change: Change): void {
    const prev = this.data.get(change[0])?.get(change[1]);
    this.applyInMemory(change);
    if (this.pending) this.pending.push({ change, prev });
    else this.append([change]);
  }

  private append(changes: Change[]): void {
    const line = `${JSON.stringify(changes)}\n`;
    const buf = Buffer.from(line);
    writeSync(this.fd, buf);
    this.walBytes += buf.length;
    if (this.fsyncPolicy === 'always') fdatasyncSync(this.fd);
    else this.dirty = true;
    if (this.walBytes > this.compactBytes) this.compact();
  }

  private applyInMemory([collection, key, value]: Change): void {
    let map = this.data.get(collection);
    if (!map) this.data.set(collection, (map = new Map<string, unknown>()));
    const index = this.indexes.get(collection);
    if (value === null || value === undefined) {
      if (map.delete(key) && index) this.unindex(index, key);
    } else {
      if (!map.has(key) && index) this.index(index, key);
      map.set(key, value);
    }
  }

  private index(index: { byA: Map<string, Set<string>>; byB: Map<string, Set<string>> }, key: string): void {
    const [a, b] = splitPair(key);
    let sa = index.byA.get(a);
    if (!sa) index.byA.set(a, (sa = new Set()));
    sa.add(b);
    let sb = index.byB.get(b);
    if (!sb) index.byB.set(b, (sb = new Set()));
    sb.add(a);
  }

  private unindex(
    index: { byA: Map<string, Set<string>>; byB: Map<string, Set<string>> },
    key: string,
  ): void {
    const [a, b] = splitPair(key);
    const sa = index.byA.get(a);
    sa?.delete(b);
    if (sa?.size === 0) index.byA.delete(a);
    const sb = index.byB.get(b);
    sb?.delete(a);
    if (sb?.size === 0) index.byB.delete(b);
  }

  private load(): void {
    if (existsSync(this.snapshotPath)) {
      const snap = JSON.parse(readFileSync(this.snapshotPath, 'utf8')) as {
        version: number;
        data: Record<string, Record<string, unknown>>;
      };
      if (snap.version !== SNAPSHOT_VERSION)
        throw new Error(`unsupported snapshot version ${snap.version} in ${this.snapshotPath}`);
      for (const [c, records] of Object.entries(snap.data)) {
        for (const [k, v] of Object.entries(records)) this.applyInMemory([c, k, v]);
      }
    }
    if (!existsSync(this.walPath)) return;
    const text = readFileSync(this.walPath, 'utf8');
    let pos = 0;
    while (pos < text.length) {
      const nl = text.indexOf('\n', pos);
      if (nl < 0) break; // torn tail: never acknowledged as a whole
      let changes: Change[];
      try {
        changes = JSON.parse(text.slice(pos, nl)) as Change[];
      } catch {
        break;
      }
      for (const c of changes) this.applyInMemory(c);
      pos = nl + 1;
    }
  }

  /** Writes the whole state as a snapshot and empties the log. */
  private compact(): void {
    const out: Record<string, Record<string, unknown>> = {};
    for (const [c, map] of this.data) out[c] = Object.fromEntries(map);
    const tmp = `${this.snapshotPath}.tmp`;
    writeFileSync(tmp, JSON.stringify({ version: SNAPSHOT_VERSION, data: out }), { mode: 0o600 });
    const tfd = openSync(tmp, 'r+');
    fsyncSync(tfd);
    closeSync(tfd);
    renameSync(tmp, this.snapshotPath);
    ftruncateSync(this.fd, 0);
    fsyncSync(this.fd);
    this.walBytes = 0;
  }

  /** Bytes currently in the log (for tests and the admin endpoint). */
  walSize(): number {
    return existsSync(this.walPath) ? statSync(this.walPath).size : 0;
  }
}

function splitPair(key: string): [string, string] {
  const i = key.indexOf('\n');
  return [key.slice(0, i), key.slice(i + 1)];
}
