/**
 * The docs must not fall behind the code: every error code in src/ is in the registry
 * (src/core/codes.ts) and the registry and docs/troubleshooting.md list the same codes, each in
 * its section; every config and profile option is named in docs/configuration.md.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ENV_VARS } from '../../src/config/load.js';
import { allErrorCodes, errorArea, isErrorCode, type ErrorArea } from '../../src/core/codes.js';
import { ConfigSchema, ProfileSchema } from '../../src/config/schema.js';
import { ROOT } from '../helpers/cli.js';

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sources(path) : path.endsWith('.ts') ? [path] : [];
  });
}

/** Option paths of a zod object schema, descending into nested objects. */
function optionPaths(schema: z.ZodType, prefix = ''): string[] {
  let s: z.ZodType = schema;
  for (;;) {
    const def = (s as unknown as { def: { type: string; innerType?: z.ZodType } }).def;
    if ((def.type === 'default' || def.type === 'prefault' || def.type === 'optional') && def.innerType)
      s = def.innerType;
    else break;
  }
  if (!(s instanceof z.ZodObject)) return [prefix];
  return Object.entries(s.shape as Record<string, z.ZodType>).flatMap(([k, v]) => {
    const path = prefix ? `${prefix}.${k}` : k;
    const nested = optionPaths(v, path);
    return nested.length === 1 && nested[0] === path ? [path] : [path, ...nested];
  });
}

describe('docs stay true to the code', () => {
  // Where in docs/troubleshooting.md each area of the registry is explained.
  const SECTIONS: Record<ErrorArea, string> = {
    intake: '## CSV intake problems',
    input: '## Input, configuration and usage',
    stack: '## Local stack',
    device: '## Devices and serial links',
    station: '## Station',
    hsm: '## HSM',
    emulator: '## AWS IoT stand-in',
    registration: '## AWS IoT registration',
    pipeline: '## Batch pipeline',
  };
  const troubleshooting = (): string => readFileSync(join(ROOT, 'docs/troubleshooting.md'), 'utf8');
  /** The text of the section whose heading starts with `heading`, up to the next `## `. */
  const section = (doc: string, heading: string): string => {
    const at = doc.indexOf(`\n${heading}`);
    if (at < 0) return '';
    const next = doc.indexOf('\n## ', at + 1);
    return doc.slice(at, next < 0 ? undefined : next);
  };

  it('every registered error code is explained in its section of docs/troubleshooting.md', () => {
    const doc = troubleshooting();
    const codes = allErrorCodes();
    expect(codes.length).toBeGreaterThan(140);
    expect(new Set(codes).size).toBe(codes.length);
    const misplaced = codes.filter((c) => !section(doc, SECTIONS[errorArea(c)]).includes(`| \`${c}\` |`));
    expect(misplaced).toEqual([]);
  });

  it('every code in a table of docs/troubleshooting.md is registered (no stale entries)', () => {
    const rows = [...troubleshooting().matchAll(/^\| `([A-Z][A-Z0-9_]+)` \|/gm)].map((m) => m[1]!);
    expect(rows.length).toBeGreaterThan(140);
    expect(rows.filter((c) => !isErrorCode(c))).toEqual([]);
  });

  it('every error code written in src/ is registered, and none is built at run time', () => {
    const used = new Map<string, string>();
    const built: string[] = [];
    // Places where a literal is an error code: a ProvlineError or AWS failure being made, a
    // `code:`/`errorCode:` field, a failed journal move, a code read back from storage.
    const literal = [
      /(?:ProvlineError|awsFailure)\(\s*'([A-Z][A-Z0-9_]+)'/g,
      /\b(?:code|errorCode|Code)\s*[:=]\s*'([A-Z][A-Z0-9_]+)'/g,
      /\bfailMove\([^()]*?'([A-Z][A-Z0-9_]+)'/g,
      /\bstoredErrorCode\([^()]*?'([A-Z][A-Z0-9_]+)'\)/g,
    ];
    // The same places holding a template literal: a code made from run-time values.
    const template = [/(?:ProvlineError|awsFailure)\(\s*`/g, /\b(?:code|errorCode)\s*:\s*`/g];
    for (const file of sources(join(ROOT, 'src'))) {
      const text = readFileSync(file, 'utf8');
      const where = file.slice(ROOT.length);
      for (const re of literal) for (const m of text.matchAll(re)) used.set(m[1]!, where);
      for (const re of template)
        for (const m of text.matchAll(re)) built.push(`${where}: ${text.slice(m.index, m.index + 60)}`);
      const union = /export type ProblemCode\s*=([^;]*);/.exec(text);
      for (const m of union?.[1]?.matchAll(/'([A-Z][A-Z0-9_]+)'/g) ?? []) used.set(m[1]!, where);
    }
    expect(used.size).toBeGreaterThan(100);
    const unregistered = [...used].filter(([c]) => !isErrorCode(c)).map(([c, f]) => `${c} (${f})`);
    expect(unregistered, 'add these to src/core/codes.ts and docs/troubleshooting.md').toEqual([]);
    expect(built, 'pick a registered code instead of building one').toEqual([]);
  });

  it('every config option, profile option and environment variable is in docs/configuration.md', () => {
    const doc = readFileSync(join(ROOT, 'docs/configuration.md'), 'utf8');
    const names = [...optionPaths(ConfigSchema), ...optionPaths(ProfileSchema), ...Object.keys(ENV_VARS)];
    expect(names).toContain('hsm.pinFile');
    expect(names).toContain('registration.chunkSize');
    const missing = names.filter((n) => !doc.includes(`\`${n}\``));
    expect(missing).toEqual([]);
  });
});
