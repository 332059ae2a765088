/**
 * The intake rules as pure functions over one row. The streaming reader (intake.ts) feeds
 * them; these know nothing about files. Limits are AWS IoT's (shared/reference/aws-iot.md §6).
 */
import type { ResolvedProfile } from '../config/index.js';
import { AWS_NAME_RE } from '../config/index.js';
import { compilePattern, type Pattern } from './pattern.js';

export const ATTRIBUTE_VALUE_RE = /^[a-zA-Z0-9_.,@/:#=[\]-]*$/;
export const ATTRIBUTE_VALUE_MAX = 800;
export const ATTRIBUTES_WITHOUT_TYPE = 3;
export const ATTRIBUTES_WITH_TYPE = 50;
export const PARAMETER_VALUE_MAX = 4096;
export const SERIAL_MAX = 128;
/** Serials: printable ASCII without spaces, quotes, commas or backslashes. */
export const SERIAL_RE = /^[!#-+\--[\]-~]+$/;

/** Placeholders filled in later by the pipeline, not from CSV columns. */
export const BUILTIN_PLACEHOLDERS = new Set(['thingName', 'csr']);

export type ProblemCode =
  | 'FILE_EMPTY'
  | 'NO_DATA_ROWS'
  | 'HEADER_MISSING_SERIAL'
  | 'HEADER_DUPLICATE_COLUMN'
  | 'HEADER_EMPTY_COLUMN'
  | 'HEADER_MISSING_COLUMN'
  | 'PROFILE_TOO_MANY_ATTRIBUTES'
  | 'FIELD_COUNT'
  | 'SERIAL_EMPTY'
  | 'SERIAL_INVALID'
  | 'SERIAL_DUPLICATE'
  | 'THING_NAME_INVALID'
  | 'THING_NAME_DUPLICATE'
  | 'ATTRIBUTE_VALUE_INVALID'
  | 'PARAMETER_TOO_LONG'
  | 'INVALID_UTF8'
  | 'FILE_ENCODING'
  | 'UNTERMINATED_QUOTE'
  | 'CSV_SYNTAX';

export interface Problem {
  /** 1-based physical line where the record starts (the header is line 1). */
  line: number;
  /** Column name, or null when the problem concerns the whole record or file. */
  column: string | null;
  /** The offending value, truncated and escaped for display; null when there is none. */
  value: string | null;
  code: ProblemCode;
  message: string;
  hint: string;
}

/** One valid row, as the pipeline needs it. */
export interface IntakeRow {
  line: number;
  serial: string;
  thingName: string;
  attributes: Record<string, string>;
  /** Template parameters from CSV columns (builtins such as {csr} are left as placeholders). */
  parameters: Record<string, string>;
}

const DISPLAY_MAX = 64;

/** Truncates and escapes a value so that it prints on one line and shows hidden characters. */
export function displayValue(value: string): string {
  let s = value.length > DISPLAY_MAX ? value.slice(0, DISPLAY_MAX) : value;
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is escaped here
  s = s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\ufeff\ufffd\\]/g, (ch) => {
    if (ch === '\\') return '\\\\';
    if (ch === '\n') return '\\n';
    if (ch === '\r') return '\\r';
    if (ch === '\t') return '\\t';
    return `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`;
  });
  return value.length > DISPLAY_MAX ? `${s}…(${value.length} chars)` : s;
}

/** The profile compiled against one CSV header: column indexes and patterns. */
export class RowRules {
  readonly header: string[];
  readonly serialIndex: number;
  private readonly index: Map<string, number>;
  private readonly thingName: Pattern;
  private readonly attributes: Array<[string, Pattern]>;
  private readonly parameters: Array<[string, Pattern]>;
  /** True when distinct serials always give distinct thing names, so no second map is needed. */
  readonly thingNameInjective: boolean;
  /**
   * Columns the profile needs that the header lacks (a header problem, reported once): the
   * names, attributes and parameters built from them are not checked on the rows, everything
   * else is, so one run reports every problem of the file.
   */
  private readonly missing = new Set<string>();

  private constructor(header: string[], profile: ResolvedProfile) {
    this.header = header;
    this.index = new Map(header.map((h, i) => [h, i]));
    this.serialIndex = this.index.get('serial') ?? -1;
    this.thingName = compilePattern(profile.thingName, `profile ${profile.name}: thingName`);
    this.attributes = Object.entries(profile.attributes).map(([k, v]) => [
      k,
      compilePattern(v, `profile ${profile.name}: attributes.${k}`),
    ]);
    this.parameters = Object.entries(profile.parameters).map(([k, v]) => [
      k,
      compilePattern(v, `profile ${profile.name}: parameters.${k}`),
    ]);
    const names = this.thingName.names;
    this.thingNameInjective = names.length === 1 && names[0] === 'serial';
  }

  /**
   * Checks the header against the profile; returns its problems and, unless the profile's
   * patterns cannot be compiled, rules that check the rows as far as the header allows.
   */
  static forHeader(header: string[], profile: ResolvedProfile): { rules?: RowRules; problems: Problem[] } {
    const problems: Problem[] = [];
    const seen = new Set<string>();
    header.forEach((name, i) => {
      if (name.trim() === '') {
        problems.push(
          headerProblem(
            'HEADER_EMPTY_COLUMN',
            null,
            `column ${i + 1} of the header has no name`,
            'Give every column a name in the header row.',
          ),
        );
      } else if (seen.has(name)) {
        problems.push(
          headerProblem(
            'HEADER_DUPLICATE_COLUMN',
            name,
            `column "${name}" appears twice in the header`,
            'Column names must be unique.',
          ),
        );
      }
      seen.add(name);
    });
    if (!seen.has('serial')) {
      problems.push(
        headerProblem(
          'HEADER_MISSING_SERIAL',
          null,
          `the header has no "serial" column (found: ${header.map(displayValue).join(', ')})`,
          'Name the column that holds serial numbers exactly "serial" (lower case).',
        ),
      );
    }
    let rules: RowRules;
    try {
      rules = new RowRules(header, profile);
    } catch (e) {
      if (e instanceof Error)
        problems.push(headerProblem('HEADER_MISSING_COLUMN', null, e.message, 'Fix the profile pattern.'));
      return { problems };
    }
    const wanted = new Map<string, string>();
    for (const n of rules.thingName.names) wanted.set(n, 'thingName');
    for (const [k, p] of rules.attributes) for (const n of p.names) wanted.set(n, `attributes.${k}`);
    for (const [k, p] of rules.parameters) for (const n of p.names) wanted.set(n, `parameters.${k}`);
    for (const [col, use] of wanted) {
      if (BUILTIN_PLACEHOLDERS.has(col) || seen.has(col)) continue;
      rules.missing.add(col);
      if (col === 'serial') continue; // HEADER_MISSING_SERIAL says it already
      problems.push(
        headerProblem(
          'HEADER_MISSING_COLUMN',
          col,
          `profile "${profile.name}" needs column "${col}" (for ${use}) but the header has no such column`,
          `Add a "${col}" column, or use a profile that does not need it.`,
        ),
      );
    }
    const limit = profile.thingType ? ATTRIBUTES_WITH_TYPE : ATTRIBUTES_WITHOUT_TYPE;
    if (rules.attributes.length > limit) {
      problems.push(
        headerProblem(
          'PROFILE_TOO_MANY_ATTRIBUTES',
          null,
          `profile "${profile.name}" sets ${rules.attributes.length} thing attributes; AWS IoT allows ${limit} ${profile.thingType ? 'with' : 'without'} a thing type`,
          profile.thingType
            ? 'Drop attributes from the profile.'
            : 'Set a thingType in the profile (50 attributes) or drop attributes.',
        ),
      );
    }
    if (!seen.has('serial')) rules.missing.add('serial');
    return { rules, problems };
  }

  /** True when a pattern can be built from this header (no column it names is missing). */
  private complete(p: Pattern): boolean {
    return this.missing.size === 0 || p.names.every((n) => !this.missing.has(n));
  }

  /** Validates one record (fields already split). Pushes problems; returns the row if valid. */
  check(fields: string[], line: number, problems: Problem[]): IntakeRow | undefined {
    const before = problems.length;
    if (fields.length !== this.header.length) {
      problems.push({
        line,
        column: null,
        value: String(fields.length),
        code: 'FIELD_COUNT',
        message: `line ${line} has ${fields.length} field${fields.length === 1 ? '' : 's'}; the header has ${this.header.length}`,
        hint: `Every row needs ${this.header.length} comma-separated fields (${this.header.join(',')}); quote values that contain commas.`,
      });
      return undefined;
    }
    for (let i = 0; i < fields.length; i++) {
      if (fields[i]!.includes('\ufffd')) {
        problems.push({
          line,
          column: this.header[i]!,
          value: displayValue(fields[i]!),
          code: 'INVALID_UTF8',
          message: `column "${this.header[i]}" is not valid UTF-8`,
          hint: 'Save the file as UTF-8 (the \\ufffd marks where undecodable bytes were).',
        });
      }
    }
    if (problems.length > before) return undefined;

    // Without a serial column (a header problem) the row's other columns are still checked.
    const serial = this.serialIndex < 0 ? undefined : fields[this.serialIndex]!;
    if (serial === '') {
      problems.push({
        line,
        column: 'serial',
        value: '',
        code: 'SERIAL_EMPTY',
        message: 'serial is empty',
        hint: 'Every row needs a serial number.',
      });
      return undefined;
    }
    const serialBad = serial !== undefined && (serial.length > SERIAL_MAX || !SERIAL_RE.test(serial));
    if (serialBad) {
      problems.push({
        line,
        column: 'serial',
        value: displayValue(serial),
        code: 'SERIAL_INVALID',
        message:
          serial.length > SERIAL_MAX
            ? `serial is ${serial.length} characters long`
            : 'serial contains a character that is not allowed',
        hint: `Serials are 1-${SERIAL_MAX} printable ASCII characters without spaces, quotes, commas or backslashes.`,
      });
    }
    const get = (name: string): string => {
      if (BUILTIN_PLACEHOLDERS.has(name)) return `{${name}}`;
      return fields[this.index.get(name)!] ?? '';
    };
    // A bad serial is reported once, not again through every name and attribute built from it.
    const derivedFromBadSerial = (p: Pattern): boolean => serialBad && p.names.includes('serial');
    const checkable = (p: Pattern): boolean => this.complete(p) && !derivedFromBadSerial(p);
    const thingName = this.thingName.apply(get);
    if (!AWS_NAME_RE.test(thingName) && checkable(this.thingName)) {
      problems.push({
        line,
        column: this.thingName.names.length === 1 ? this.thingName.names[0]! : 'serial',
        value: displayValue(thingName),
        code: 'THING_NAME_INVALID',
        message: `thing name "${displayValue(thingName)}" (from pattern "${this.thingName.source}") is not a valid AWS IoT thing name`,
        hint: 'Thing names are 1-128 characters of a-z, A-Z, 0-9, colon, underscore and hyphen.',
      });
    }
    const attributes: Record<string, string> = {};
    for (const [name, p] of this.attributes) {
      const value = p.apply(get);
      if ((value.length > ATTRIBUTE_VALUE_MAX || !ATTRIBUTE_VALUE_RE.test(value)) && checkable(p)) {
        problems.push({
          line,
          column: p.names.length === 1 ? p.names[0]! : name,
          value: displayValue(value),
          code: 'ATTRIBUTE_VALUE_INVALID',
          message: `attribute "${name}" value ${value.length > ATTRIBUTE_VALUE_MAX ? `is ${value.length} characters long` : 'contains a character AWS IoT does not allow'}`,
          hint: `Attribute values are up to ${ATTRIBUTE_VALUE_MAX} characters of a-z A-Z 0-9 and _ . , @ / : # = [ ] - (no spaces).`,
        });
      }
      attributes[name] = value;
    }
    const parameters: Record<string, string> = {};
    for (const [name, p] of this.parameters) {
      const value = p.apply(get);
      if (value.length > PARAMETER_VALUE_MAX && this.complete(p)) {
        problems.push({
          line,
          column: p.names.length === 1 ? p.names[0]! : name,
          value: displayValue(value),
          code: 'PARAMETER_TOO_LONG',
          message: `template parameter "${name}" is ${value.length} characters long`,
          hint: `AWS IoT accepts parameter values of up to ${PARAMETER_VALUE_MAX} characters.`,
        });
      }
      parameters[name] = value;
    }
    if (problems.length > before || serial === undefined || this.missing.size) return undefined;
    return { line, serial, thingName, attributes, parameters };
  }
}

function headerProblem(code: ProblemCode, column: string | null, message: string, hint: string): Problem {
  return { line: 1, column, value: column === null ? null : displayValue(column), code, message, hint };
}
