/**
 * A compact set of strings, each remembered with the line it was first seen on.
 *
 * A JavaScript Map of a million short strings costs ~150 MB of heap; this keeps the UTF-8
 * bytes in one growing arena and an open-addressing table of indexes, about 30 bytes per key,
 * and compares bytes exactly on a hash match (no false duplicates).
 */
export class KeySet {
  private arena = Buffer.allocUnsafe(1 << 20);
  private used = 0;
  /** Per key: arena offset, byte length, line. */
  private offsets: Uint32Array = new Uint32Array(1 << 16);
  private lengths: Uint32Array = new Uint32Array(1 << 16);
  private lines: Uint32Array = new Uint32Array(1 << 16);
  private count = 0;
  /** Slots hold key index + 1 (0 = empty). */
  private table = new Uint32Array(1 << 17);
  private mask = (1 << 17) - 1;

  get size(): number {
    return this.count;
  }

  /** Adds `key` first seen on `line`; returns the earlier line if it was already present. */
  addOrGetLine(key: string, line: number): number | undefined {
    const byteLen = Buffer.byteLength(key);
    if (this.used + byteLen > this.arena.length) this.growArena(byteLen);
    this.arena.write(key, this.used, 'utf8');
    const h = hash(this.arena, this.used, byteLen);
    let slot = h & this.mask;
    for (;;) {
      const entry = this.table[slot]!;
      if (entry === 0) break;
      const i = entry - 1;
      if (
        this.lengths[i] === byteLen &&
        this.arena.compare(
          this.arena,
          this.used,
          this.used + byteLen,
          this.offsets[i],
          this.offsets[i]! + byteLen,
        ) === 0
      ) {
        return this.lines[i]!;
      }
      slot = (slot + 1) & this.mask;
    }
    if (this.count === this.offsets.length) this.growEntries();
    const i = this.count++;
    this.offsets[i] = this.used;
    this.lengths[i] = byteLen;
    this.lines[i] = line;
    this.used += byteLen;
    this.table[slot] = i + 1;
    if (this.count * 2 > this.table.length) this.rehash();
    return undefined;
  }

  private growArena(need: number): void {
    const next = Buffer.allocUnsafe(Math.max(this.arena.length * 2, this.used + need));
    this.arena.copy(next, 0, 0, this.used);
    this.arena = next;
  }

  private growEntries(): void {
    const grow = (a: Uint32Array): Uint32Array => {
      const b = new Uint32Array(a.length * 2);
      b.set(a);
      return b;
    };
    this.offsets = grow(this.offsets);
    this.lengths = grow(this.lengths);
    this.lines = grow(this.lines);
  }

  private rehash(): void {
    const size = this.table.length * 2;
    this.table = new Uint32Array(size);
    this.mask = size - 1;
    for (let i = 0; i < this.count; i++) {
      let slot = hash(this.arena, this.offsets[i]!, this.lengths[i]!) & this.mask;
      while (this.table[slot] !== 0) slot = (slot + 1) & this.mask;
      this.table[slot] = i + 1;
    }
  }
}

/** FNV-1a over bytes, with a final avalanche so that similar serials spread over the table. */
function hash(buf: Buffer, start: number, len: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < start + len; i++) {
    h ^= buf[i]!;
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h >>> 0;
}
