/**
 * Streaming CSV intake: reads a CSV once with csv-parse, in constant memory apart from the
 * set of serials seen (needed to find duplicates), and reports every problem with the physical
 * line where its record starts. Valid rows go to `onRow` as they are read, so `submit` builds
 * its plan in the same pass.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Transform, type Readable } from 'node:stream';
import { parse, type CsvError } from 'csv-parse';
import type { ResolvedProfile } from '../config/index.js';
import { ProvlineError } from '../core/index.js';
import { encodingMessage, sniffEncoding, SNIFF_BYTES } from './encoding.js';
import { KeySet } from './key-set.js';
import { displayValue, RowRules, type IntakeRow, type Problem } from './rules.js';

export interface IntakeOptions {
  /** Keep at most this many problems (the rest are only counted). */
  maxProblems?: number;
  /**
   * Each valid row, in file order. When it returns a promise, reading waits for it (so a
   * consumer that writes rows away keeps memory bounded).
   */
  onRow?: (row: IntakeRow) => unknown;
  /** Also compute the SHA-256 of the file's bytes (IntakeResult.sha256). */
  sha256?: boolean;
  /**
   * Called once per data row that is not valid, with the row's own serial as written (display
   * form), or null when the row has no readable serial (a broken record, a missing field).
   */
  onReject?: (line: number, serial: string | null) => void;
}

export interface IntakeResult {
  valid: boolean;
  /** Data rows read (records after the header, blank lines not counted). */
  rows: number;
  validRows: number;
  /** The first `maxProblems` problems, in the order found. */
  problems: Problem[];
  problemCount: number;
  header: string[];
  /** Hex SHA-256 of the bytes read (validateCsvFile with `sha256`). */
  sha256?: string;
}

export async function validateCsvFile(
  path: string,
  profile: ResolvedProfile,
  options: IntakeOptions = {},
): Promise<IntakeResult> {
  let stream: Readable;
  try {
    stream = createReadStream(path, { highWaterMark: 256 * 1024 });
    await new Promise<void>((resolve, reject) => {
      stream.once('open', () => resolve());
      stream.once('error', reject);
    });
  } catch (e) {
    throw new ProvlineError(
      'INPUT_UNREADABLE',
      `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`,
      {
        kind: 'invalid-input',
        cause: e,
        hint: 'Check the path and the file permissions.',
      },
    );
  }
  if (!options.sha256) return validateCsv(stream, profile, options);
  // Hash the bytes as they go by, rather than reading the file a second time.
  const hash = createHash('sha256');
  const hashed = stream.pipe(
    new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        cb(null, chunk);
      },
    }),
  );
  stream.once('error', (e) => hashed.destroy(e));
  const result = await validateCsv(hashed, profile, options);
  return { ...result, sha256: hash.digest('hex') };
}

export async function validateCsv(
  input: Readable,
  profile: ResolvedProfile,
  options: IntakeOptions = {},
): Promise<IntakeResult> {
  const maxProblems = options.maxProblems ?? 1000;
  const problems: Problem[] = [];
  let problemCount = 0;
  const report = (batch: Problem[]): void => {
    for (const p of batch) {
      problemCount++;
      if (problems.length < maxProblems) problems.push(p);
    }
  };

  // The first bytes tell a UTF-16/32 or binary file from text before any row is read.
  const { head: sample, ended } = await peek(input, SNIFF_BYTES);
  const foreign = sniffEncoding(sample);
  if (foreign) {
    input.destroy();
    report([
      {
        line: 1,
        column: null,
        value: null,
        code: 'FILE_ENCODING',
        message: encodingMessage(foreign),
        hint: 'Save the file as UTF-8 (in a spreadsheet: "CSV UTF-8"), or convert it: iconv -f UTF-16 -t UTF-8 in.csv > out.csv.',
      },
    ]);
    return { valid: false, rows: 0, validRows: 0, problems, problemCount, header: [] };
  }
  // In a one-column file a row holding only "" is an empty serial, not a blank line; csv-parse
  // gives both as one empty field, so the quoting is asked for (only then: it costs per field).
  const oneColumn = !firstLine(sample).includes(',');

  const parser = parse({
    bom: true,
    relax_column_count: true,
    // A stray quote inside an unquoted field is kept as a literal: the rules then flag the
    // field itself, and the record boundaries (and so every later line number) stay right.
    relax_quotes: true,
    record_delimiter: ['\r\n', '\n', '\r'],
    // Blank lines come through as one empty field, so that line numbers can be counted here
    // without csv-parse's per-record `info` objects (which cost more than the parse itself).
    skip_empty_lines: false,
    skip_records_with_error: true,
    ...(oneColumn
      ? {
          cast: (value: string, ctx: { quoting: boolean }) =>
            value === '' && ctx.quoting ? QUOTED_EMPTY : value,
        }
      : {}),
  });

  let rules: RowRules | undefined;
  let header: string[] = [];
  let headerSeen = false;
  let headerBroken = false;
  let rows = 0;
  let validRows = 0;
  /** Physical line where the next record starts. */
  let nextLine = 1;
  const serials = new KeySet();
  let thingNames: KeySet | undefined;
  const batch: Problem[] = [];

  // A broken record is announced by a 'skip' event as soon as it is parsed, while the records
  // before it may still sit in the stream's buffer. Each skip carries how many records came
  // before it, so it is handled exactly when the reader gets there: line numbers stay exact.
  const skips: Array<{ after: number; endLine: number; code: string; message: string }> = [];
  let consumed = 0;
  let brokenRecords = 0;
  parser.on('skip', (err: CsvError & { lines?: number; records?: number }) => {
    skips.push({
      after: err.records ?? consumed,
      endLine: err.lines ?? nextLine,
      code: err.code,
      message: err.message,
    });
  });
  const flushSkips = (all: boolean): void => {
    while (skips.length && (all || skips[0]!.after <= consumed)) {
      const skip = skips.shift()!;
      brokenRecords++;
      const line = nextLine;
      nextLine = skip.endLine + 1;
      if (headerSeen) {
        rows++;
        options.onReject?.(line, null);
      }
      if (skip.code === 'CSV_QUOTE_NOT_CLOSED') {
        report([
          {
            line,
            column: null,
            value: null,
            code: 'UNTERMINATED_QUOTE',
            message: `a quoted field opened on line ${line} is never closed (the file ends inside it)`,
            hint: 'Close the quote, or double any quote character inside a quoted field ("").',
          },
        ]);
      } else {
        report([
          {
            line,
            column: null,
            value: null,
            code: 'CSV_SYNTAX',
            message: skip.message,
            hint: 'Fix the CSV syntax on this line (RFC 4180).',
          },
        ]);
      }
    }
  };

  const consume = (record: Array<string | typeof QUOTED_EMPTY>): void | Promise<void> => {
    flushSkips(false);
    consumed++;
    const line = nextLine;
    const quotedEmpty = record.length === 1 && record[0] === QUOTED_EMPTY;
    const fields = quotedEmpty ? [''] : (record as string[]);
    nextLine += 1 + lineBreaksIn(fields);
    if (!quotedEmpty && fields.length === 1 && fields[0]!.trim() === '') return; // a blank line
    if (!headerSeen) {
      headerSeen = true;
      header = fields;
      const res = RowRules.forHeader(fields, profile);
      report(res.problems);
      rules = res.rules;
      headerBroken = res.problems.length > 0;
      if (rules && !rules.thingNameInjective) thingNames = new KeySet();
      return;
    }
    rows++;
    if (!rules) return;
    const row = rules.check(fields, line, batch);
    const serial = rules.serialIndex < 0 ? undefined : fields[rules.serialIndex];
    // Every row's serial is remembered, valid or not, so that a duplicate names both lines.
    const first = serial ? serials.addOrGetLine(serial, line) : undefined;
    if (first !== undefined) {
      batch.push({
        line,
        column: 'serial',
        value: displayValue(serial!),
        code: 'SERIAL_DUPLICATE',
        message: `serial "${displayValue(serial!)}" is on line ${first} and again on line ${line}`,
        hint: 'Each serial may appear once per batch; remove one of the two lines.',
      });
    } else if (row) {
      const other = thingNames?.addOrGetLine(row.thingName, line);
      if (other !== undefined) {
        batch.push({
          line,
          column: null,
          value: displayValue(row.thingName),
          code: 'THING_NAME_DUPLICATE',
          message: `thing name "${displayValue(row.thingName)}" is also produced by line ${other}`,
          hint: `The profile's thingName pattern must give each device its own name (include {serial}).`,
        });
      } else if (!headerBroken) {
        validRows++;
        const out = options.onRow?.(row);
        if (out instanceof Promise) return out as Promise<void>;
      }
    }
    if (batch.length) {
      report(batch);
      batch.length = 0;
      options.onReject?.(line, readableSerial(serial));
    }
  };

  const done = new Promise<void>((resolve, reject) => {
    // While a row's consumer works (its promise pending), no record is read: the parser's
    // buffer fills and the file stream waits.
    let waiting: Promise<void> | undefined;
    const drain = (): void => {
      let rec: string[] | null;
      while (!waiting && (rec = parser.read() as string[] | null) !== null) {
        const p = consume(rec);
        if (p)
          waiting = p.then(() => {
            waiting = undefined;
            drain();
          }, reject);
      }
    };
    parser.on('readable', drain);
    parser.once('end', () => {
      flushSkips(true);
      Promise.resolve(waiting).then(() => resolve(), reject);
    });
    parser.once('error', reject);
    input.once('error', reject);
  });
  // The sampled bytes first, then the rest of the stream.
  if (sample.length) parser.write(sample);
  if (ended) parser.end();
  else input.pipe(parser);
  try {
    await done;
  } catch (e) {
    throw new ProvlineError(
      'INPUT_UNREADABLE',
      `cannot read the CSV: ${e instanceof Error ? e.message : String(e)}`,
      {
        kind: 'invalid-input',
        cause: e,
      },
    );
  }

  if (!headerSeen) {
    // A file whose only record is broken (say, an unterminated quote) was reported as such.
    if (brokenRecords === 0)
      report([
        {
          line: 1,
          column: null,
          value: null,
          code: 'FILE_EMPTY',
          message: 'the file is empty',
          hint: 'The first line must be a header with a "serial" column, followed by one row per device.',
        },
      ]);
  } else if (rows === 0 && !headerBroken) {
    report([
      {
        line: 2,
        column: null,
        value: null,
        code: 'NO_DATA_ROWS',
        message: 'the file has a header but no data rows',
        hint: 'Add one row per device after the header.',
      },
    ]);
  }
  return { valid: problemCount === 0, rows, validRows, problems, problemCount, header };
}

/** Stands for a field written as "" in a one-column file (see the parser's cast option). */
const QUOTED_EMPTY = Object.freeze({ quotedEmpty: true });

/** A rejected row's serial for reports: as written, or null when there is none to show. */
function readableSerial(serial: string | undefined): string | null {
  if (serial === undefined || serial.trim() === '' || serial.includes('\ufffd')) return null;
  return displayValue(serial);
}

/** The first line of a sample (after a UTF-8 byte-order mark), as text. */
function firstLine(sample: Buffer): string {
  const start = sample[0] === 0xef && sample[1] === 0xbb && sample[2] === 0xbf ? 3 : 0;
  let end = start;
  while (end < sample.length && sample[end] !== 10 && sample[end] !== 13) end++;
  return sample.toString('utf8', start, end);
}

/**
 * Reads the first chunks of a stream, at least `n` bytes unless it ends first, and pauses it:
 * the caller hands these bytes on before piping the rest.
 */
async function peek(input: Readable, n: number): Promise<{ head: Buffer; ended: boolean }> {
  const chunks: Buffer[] = [];
  let size = 0;
  let ended = false;
  await new Promise<void>((resolve, reject) => {
    const onData = (c: Buffer | string): void => {
      const b = typeof c === 'string' ? Buffer.from(c) : c;
      chunks.push(b);
      size += b.length;
      if (size >= n) finish();
    };
    const finish = (): void => {
      input.off('data', onData);
      input.off('end', onEnd);
      input.off('error', onError);
      input.pause();
      resolve();
    };
    const onError = (e: Error): void => {
      input.off('data', onData);
      input.off('end', onEnd);
      reject(e);
    };
    const onEnd = (): void => {
      ended = true;
      finish();
    };
    input.on('data', onData);
    input.once('end', onEnd);
    input.once('error', onError);
  });
  return { head: Buffer.concat(chunks), ended };
}

/** Line breaks inside quoted fields (CRLF counts once), so records spanning lines count right. */
function lineBreaksIn(fields: string[]): number {
  let n = 0;
  for (const f of fields) {
    if (f.length < 1 || (f.indexOf('\n') < 0 && f.indexOf('\r') < 0)) continue;
    for (let i = 0; i < f.length; i++) {
      const c = f.charCodeAt(i);
      if (c === 10) n++;
      else if (c === 13) {
        n++;
        if (f.charCodeAt(i + 1) === 10) i++;
      }
    }
  }
  return n;
}
