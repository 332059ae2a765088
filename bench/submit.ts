/**
 * Submit benchmark (issue 16, item 3): `submit` must run in bounded memory whatever the lot's
 * size. For each lot size (default 1,000,000 and 2,000,000 rows) it writes a CSV, then runs,
 * each in a fresh process so that peak RSS is that process's own:
 *
 *   - `validate` alone (the physical limit of reading and checking the file), and
 *   - `submit` into a local stack's Redis (validate, plan pages, accept, enqueue; no workers),
 *
 * and prints one JSON object: rows/s and peak RSS of each, and submit's rows/s as a fraction
 * of validate's. Goal: submit under 200 MB at 2 M rows, at ≥ 0.5 of validate's rows/s.
 *
 *   npm run bench:submit [-- --rows 1000000,2000000]
 */
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { validateCsvFile } from '../src/batch/index.js';
import { getProfile, loadConfig } from '../src/config/index.js';
import { BatchStore, Journal, connectionFromUrl, PipelineQueues, submitBatch } from '../src/jobs/index.js';
import { resolveRuntime, stackDown, stackUp } from '../src/stack/index.js';

interface ChildResult {
  seconds: number;
  maxRssKB: number;
  rows: number;
  accepted?: number;
}

async function writeCsv(path: string, rows: number): Promise<void> {
  const out = createWriteStream(path);
  out.write('serial,hw_rev,batch_note\n');
  let chunk = '';
  for (let i = 0; i < rows; i++) {
    chunk += `SB${String(i).padStart(10, '0')},B${i % 7},lot-2026-11\n`;
    if (chunk.length > 1 << 16) {
      if (!out.write(chunk)) await once(out, 'drain');
      chunk = '';
    }
  }
  out.end(chunk);
  await once(out, 'finish');
}

/** Child mode: one validate or one submit in this fresh process; prints its time and peak RSS. */
async function child(mode: string, file: string): Promise<void> {
  const loaded = loadConfig();
  const profile = getProfile(loaded, 'demo');
  const t0 = process.hrtime.bigint();
  let rows: number;
  let accepted: number | undefined;
  if (mode === 'validate') {
    const r = await validateCsvFile(file, profile);
    if (!r.valid) throw new Error(`the generated file is invalid: ${JSON.stringify(r.problems[0])}`);
    rows = r.rows;
  } else {
    const url = resolveRuntime(loaded).redisUrl!;
    const redis = new Redis(url, { maxRetriesPerRequest: null });
    const journal = new Journal(redis, { prefix: 'bench' });
    const batches = new BatchStore(redis, journal.keys);
    const queues = new PipelineQueues(connectionFromUrl(url), 'bench');
    const r = await submitBatch(
      { journal, batches, queues },
      { csvPath: file, profile, hsmChunk: loaded.config.workers.hsmChunk },
    );
    if (r.status !== 'submitted') throw new Error(`submit did not submit: ${r.status}`);
    rows = r.rows;
    accepted = r.accepted;
    await queues.close();
    await redis.quit();
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const out: ChildResult = { seconds, maxRssKB: process.resourceUsage().maxRSS, rows };
  if (accepted !== undefined) out.accepted = accepted;
  console.log(JSON.stringify(out));
}

function runChild(mode: string, file: string, env: NodeJS.ProcessEnv): ChildResult {
  const out = execFileSync(process.execPath, [process.argv[1]!, '--child', mode, file], {
    encoding: 'utf8',
    env,
    maxBuffer: 1 << 20,
  });
  return JSON.parse(out.trim().split('\n').pop()!) as ChildResult;
}

if (process.argv[2] === '--child') {
  await child(process.argv[3]!, process.argv[4]!);
  process.exit(0);
}

const i = process.argv.indexOf('--rows');
const sizes = (i > 0 ? process.argv[i + 1]! : '1000000,2000000').split(',').map(Number);
const dir = mkdtempSync(join(tmpdir(), 'provline-bench-submit-'));
const home = join(dir, 'home');
const env = { ...process.env, PROVLINE_HOME: home, PROVLINE_LOG_LEVEL: 'warn' };
try {
  const stack = await stackUp(home);
  const redis = new Redis(stack.redis.url!);
  const runs = [];
  for (const rows of sizes) {
    const file = join(dir, `lot-${rows}.csv`);
    await writeCsv(file, rows);
    const validate = runChild('validate', file, env);
    await redis.flushall();
    const submit = runChild('submit', file, env);
    if (submit.accepted !== rows) throw new Error(`submit accepted ${submit.accepted} of ${rows}`);
    await redis.flushall();
    rmSync(file, { force: true });
    const rate = (r: ChildResult): number => Math.round(rows / r.seconds);
    runs.push({
      rows,
      validate: {
        seconds: +validate.seconds.toFixed(2),
        rowsPerSecond: rate(validate),
        peakRssMB: +(validate.maxRssKB / 1024).toFixed(1),
      },
      submit: {
        seconds: +submit.seconds.toFixed(2),
        rowsPerSecond: rate(submit),
        peakRssMB: +(submit.maxRssKB / 1024).toFixed(1),
      },
      ratio: +(validate.seconds / submit.seconds).toFixed(3),
    });
  }
  await redis.quit();
  console.log(
    JSON.stringify({
      benchmark: 'submit',
      runs,
      goal: { submitPeakRssMB: 200, ratio: 0.5 },
      met: runs.every((r) => r.submit.peakRssMB < 200 && r.ratio >= 0.5),
    }),
  );
} finally {
  await stackDown(home);
  rmSync(dir, { recursive: true, force: true });
}
