/**
 * The docs must not fall behind the code: every error code raised in src/ has an entry in
 * docs/troubleshooting.md, and every config and profile option is named in
 * docs/configuration.md.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ENV_VARS } from '../../src/config/load.js';
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
  it('every error code in src/ is explained in docs/troubleshooting.md', () => {
    const doc = readFileSync(join(ROOT, 'docs/troubleshooting.md'), 'utf8');
    const codes = new Set<string>();
    for (const file of sources(join(ROOT, 'src'))) {
      const text = readFileSync(file, 'utf8');
      for (const m of text.matchAll(/ProvlineError\(\s*'([A-Z][A-Z0-9_]+)'/g)) codes.add(m[1]!);
      for (const m of text.matchAll(/\bcode: '([A-Z][A-Z0-9_]+)'/g)) codes.add(m[1]!);
    }
    const rules = readFileSync(join(ROOT, 'src/batch/rules.ts'), 'utf8');
    const union = rules.slice(
      rules.indexOf('export type ProblemCode'),
      rules.indexOf(';', rules.indexOf('export type ProblemCode')),
    );
    for (const m of union.matchAll(/'([A-Z_]+)'/g)) codes.add(m[1]!);
    expect(codes.size).toBeGreaterThan(25);
    const missing = [...codes].filter((c) => !doc.includes(`\`${c}\``)).sort();
    expect(missing).toEqual([]);
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
