/**
 * The S3 stand-in's storage: one directory per bucket, each object as `<sha256(key)>` (data)
 * plus `<sha256(key)>.json` (key, size, ETag, content type, time). Data is written to a
 * temporary file and renamed, then the metadata likewise, so an object is visible only once
 * complete. An in-memory index (rebuilt at start) serves listings.
 *
 * `putAsync` writes off the event loop (the files go through libuv's thread pool), so a
 * stream of small writes (the pre-provisioning hook's markers) does not stall the MQTT broker
 * sharing the process. While it runs the key is `pending`: the handler holds every other
 * request for that key until it is done, so conditional writes stay exact.
 */
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface ObjectMeta {
  key: string;
  size: number;
  etag: string;
  lastModified: number;
  contentType: string;
}

export const BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

const fileOf = (key: string): string => createHash('sha256').update(key).digest('hex');

export class ObjectStore {
  private readonly buckets = new Map<string, { created: number; objects: Map<string, ObjectMeta> }>();
  /** Writes in flight, by `<bucket>/<key>`. */
  private readonly writing = new Map<string, Promise<unknown>>();

  constructor(private readonly root: string) {
    mkdirSync(join(root, '.uploads'), { recursive: true, mode: 0o700 });
    for (const name of readdirSync(root)) {
      if (name.startsWith('.')) continue;
      const dir = join(root, name);
      const objects = new Map<string, ObjectMeta>();
      for (const f of readdirSync(dir)) {
        if (!f.endsWith('.json')) continue;
        try {
          const meta = JSON.parse(readFileSync(join(dir, f), 'utf8')) as ObjectMeta;
          if (existsSync(join(dir, f.slice(0, -5)))) objects.set(meta.key, meta);
        } catch {
          /* a metadata file torn by a crash: the object was never acknowledged */
        }
      }
      const created = existsSync(join(dir, '.created'))
        ? Number(readFileSync(join(dir, '.created'), 'utf8'))
        : Date.now();
      this.buckets.set(name, { created, objects });
    }
  }

  bucketNames(): Array<{ name: string; created: number }> {
    return [...this.buckets.entries()]
      .map(([name, b]) => ({ name, created: b.created }))
      .sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  hasBucket(name: string): boolean {
    return this.buckets.has(name);
  }

  /** Creates a bucket; false if it already existed. */
  createBucket(name: string): boolean {
    if (this.buckets.has(name)) return false;
    const dir = join(this.root, name);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const created = Date.now();
    writeFileSync(join(dir, '.created'), String(created));
    this.buckets.set(name, { created, objects: new Map() });
    return true;
  }

  /** Deletes an empty bucket; false if it is not empty. */
  deleteBucket(name: string): boolean {
    const b = this.buckets.get(name);
    if (!b) return true;
    if (b.objects.size) return false;
    rmSync(join(this.root, name), { recursive: true, force: true });
    this.buckets.delete(name);
    return true;
  }

  put(bucket: string, key: string, data: Buffer, contentType = 'binary/octet-stream'): ObjectMeta {
    const b = this.buckets.get(bucket);
    if (!b) throw new Error(`no bucket ${bucket}`);
    const f = join(this.root, bucket, fileOf(key));
    const tmp = `${f}.${randomUUID()}.tmp`;
    writeFileSync(tmp, data);
    renameSync(tmp, f);
    const meta: ObjectMeta = {
      key,
      size: data.length,
      etag: `"${createHash('md5').update(data).digest('hex')}"`,
      lastModified: Date.now(),
      contentType,
    };
    writeFileSync(`${tmp}.json`, JSON.stringify(meta));
    renameSync(`${tmp}.json`, `${f}.json`);
    b.objects.set(key, meta);
    return meta;
  }

  /** The write in flight for this key, if any (settles when it is done, either way). */
  pending(bucket: string, key: string): Promise<unknown> | undefined {
    return this.writing.get(`${bucket}/${key}`);
  }

  /** `put` off the event loop; the key is `pending` until it is done. */
  putAsync(
    bucket: string,
    key: string,
    data: Buffer,
    contentType = 'binary/octet-stream',
  ): Promise<ObjectMeta> {
    const b = this.buckets.get(bucket);
    if (!b) return Promise.reject(new Error(`no bucket ${bucket}`));
    const id = `${bucket}/${key}`;
    const write = (async () => {
      const f = join(this.root, bucket, fileOf(key));
      const tmp = `${f}.${randomUUID()}.tmp`;
      const meta: ObjectMeta = {
        key,
        size: data.length,
        etag: `"${createHash('md5').update(data).digest('hex')}"`,
        lastModified: Date.now(),
        contentType,
      };
      await writeFile(tmp, data);
      await writeFile(`${tmp}.json`, JSON.stringify(meta));
      await rename(tmp, f);
      await rename(`${tmp}.json`, `${f}.json`);
      b.objects.set(key, meta);
      return meta;
    })();
    const settled = write.then(
      () => undefined,
      () => undefined,
    );
    this.writing.set(id, settled);
    void settled.then(() => {
      if (this.writing.get(id) === settled) this.writing.delete(id);
    });
    return write;
  }

  head(bucket: string, key: string): ObjectMeta | undefined {
    return this.buckets.get(bucket)?.objects.get(key);
  }

  get(bucket: string, key: string): { meta: ObjectMeta; data: Buffer } | undefined {
    const meta = this.head(bucket, key);
    if (!meta) return undefined;
    return { meta, data: readFileSync(join(this.root, bucket, fileOf(key))) };
  }

  delete(bucket: string, key: string): void {
    const b = this.buckets.get(bucket);
    if (!b?.objects.delete(key)) return;
    const f = join(this.root, bucket, fileOf(key));
    rmSync(`${f}.json`, { force: true });
    rmSync(f, { force: true });
  }

  /** Keys in order, after `after`, with `prefix`; common prefixes folded by `delimiter`. */
  list(
    bucket: string,
    options: { prefix: string; delimiter: string; after: string; max: number },
  ): { objects: ObjectMeta[]; prefixes: string[]; truncated: boolean; last: string } {
    const b = this.buckets.get(bucket);
    const keys = [...(b?.objects.keys() ?? [])]
      .filter((k) => k.startsWith(options.prefix) && k > options.after)
      .sort();
    const objects: ObjectMeta[] = [];
    const prefixes: string[] = [];
    let last = '';
    let count = 0;
    for (const k of keys) {
      if (options.delimiter) {
        const i = k.indexOf(options.delimiter, options.prefix.length);
        if (i >= 0) {
          const p = k.slice(0, i + options.delimiter.length);
          if (prefixes[prefixes.length - 1] === p) continue;
          if (count >= options.max) return { objects, prefixes, truncated: true, last };
          prefixes.push(p);
          last = k;
          count++;
          continue;
        }
      }
      if (count >= options.max) return { objects, prefixes, truncated: true, last };
      objects.push(b!.objects.get(k)!);
      last = k;
      count++;
    }
    return { objects, prefixes, truncated: false, last };
  }

  // --- multipart uploads ---
  startUpload(bucket: string, key: string, contentType: string): string {
    const id = randomUUID().replace(/-/g, '');
    const dir = join(this.root, '.uploads', id);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'upload.json'), JSON.stringify({ bucket, key, contentType }));
    return id;
  }

  upload(id: string): { bucket: string; key: string; contentType: string } | undefined {
    const f = join(this.root, '.uploads', id, 'upload.json');
    return existsSync(f)
      ? (JSON.parse(readFileSync(f, 'utf8')) as { bucket: string; key: string; contentType: string })
      : undefined;
  }

  putPart(id: string, part: number, data: Buffer): string {
    writeFileSync(join(this.root, '.uploads', id, String(part)), data);
    return `"${createHash('md5').update(data).digest('hex')}"`;
  }

  completeUpload(id: string, parts: number[]): ObjectMeta {
    const u = this.upload(id)!;
    const dir = join(this.root, '.uploads', id);
    const data = Buffer.concat(parts.map((p) => readFileSync(join(dir, String(p)))));
    const meta = this.put(u.bucket, u.key, data, u.contentType);
    rmSync(dir, { recursive: true, force: true });
    return meta;
  }

  abortUpload(id: string): void {
    rmSync(join(this.root, '.uploads', id), { recursive: true, force: true });
  }
}
