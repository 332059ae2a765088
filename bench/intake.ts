/**
 * Intake benchmark: writes a CSV of N rows (default 1,000,000), validates it with the demo
 * profile, and compares with the physical limits measured in the same run: reading the file
 * and parsing it with csv-parse alone (no rules). Prints one JSON object.
 *
 *   npm run bench:intake [-- --rows 1000000]
 */
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { createReadStream, createWriteStream, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'csv-parse';
import { getProfile, loadConfig } from '../src/config/index.js';
import { validateCsvFile } from '../src/batch/index.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

async function writeCsv(path: string, rows: number): Promise<void> {
  const out = createWriteStream(path);
  out.write('serial,hw_rev,batch_note\n');
  let chunk = '';
  for (let i = 0; i < rows; i++) {
    chunk += `SN${String(i).padStart(10, '0')},B${i % 7},lot-2026-11\n`;
    if (chunk.length > 1 << 16) {
      if (!out.write(chunk)) await once(out, 'drain');
      chunk = '';
    }
  }
  out.end(chunk);
  await once(out, 'finish');
}

async function timeIt<T>(fn: () => Promise<T>): Promise<{ seconds: number; value: T }> {
  const t0 = process.hrtime.bigint();
  const value = await fn();
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, value };
}

// Child mode: validate one file in a fresh process, so that peak RSS is the validator's own.
if (process.argv[2] === '--child') {
  const profile = getProfile(loadConfig(), 'demo');
  const run = await timeIt(() => validateCsvFile(process.argv[3]!, profile));
  console.log(
    JSON.stringify({
      seconds: run.seconds,
      valid: run.value.valid,
      problems: run.value.problemCount,
      maxRssKB: process.resourceUsage().maxRSS,
    }),
  );
  process.exit(0);
}

const rows = arg('rows', 1_000_000);
const dir = mkdtempSync(join(tmpdir(), 'provline-bench-intake-'));
const file = join(dir, 'batch.csv');
try {
  await writeCsv(file, rows);
  // Ours in a fresh process, as `provline validate` runs.
  const child = JSON.parse(
    execFileSync(process.execPath, [process.argv[1]!, '--child', file], { encoding: 'utf8' }),
  ) as { seconds: number; valid: boolean; problems: number; maxRssKB: number };
  const ours = { seconds: child.seconds, value: { valid: child.valid, problemCount: child.problems } };
  const peakRssMB = child.maxRssKB / 1024;

  // Physical limits of the same file in the same run: reading it, and csv-parse alone.
  const read = await timeIt(async () => {
    let n = 0;
    for await (const c of createReadStream(file, { highWaterMark: 256 * 1024 })) n += (c as Buffer).length;
    return n;
  });
  const rawParse = await timeIt(async () => {
    let n = 0;
    const p = createReadStream(file, { highWaterMark: 256 * 1024 }).pipe(
      parse({
        bom: true,
        relax_column_count: true,
        relax_quotes: true,
        record_delimiter: ['\r\n', '\n', '\r'],
        skip_empty_lines: true,
      }),
    );
    for await (const _ of p) n++;
    return n - 1;
  });
  const result = {
    benchmark: 'intake',
    rows,
    bytes: statSync(file).size,
    valid: ours.value.valid,
    problems: ours.value.problemCount,
    seconds: +ours.seconds.toFixed(3),
    rowsPerSecond: Math.round(rows / ours.seconds),
    peakRssMB: +peakRssMB.toFixed(1),
    raw: {
      readMBps: +(statSync(file).size / 1048576 / read.seconds).toFixed(1),
      csvParseRowsPerSecond: Math.round(rawParse.value / rawParse.seconds),
    },
    ratio: +(rawParse.seconds / ours.seconds).toFixed(3),
    goal: { rowsPerSecond: 300_000, peakRssMB: 150 },
  };
  console.log(JSON.stringify(result));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
