/**
 * The house's rooms, read from the import graph of every source file (tests left out): each
 * import that leaves its room goes to a room it may import (ROOM_IMPORTS, the table the lint
 * rule `house/rooms` enforces) and enters it through an index.ts; and no file-level circle
 * anywhere. The same check as the lint rule, run with the tests so CI holds it too.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/cli.js';

const IMPORT = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)'(\.{1,2}\/[^']+)'/g;
const TOP = ['src', 'workers', 'emulator', 'devices', 'bench'];

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sources(path) : path.endsWith('.ts') ? [path] : [];
  });
}
const rel = (p: string): string => relative(ROOT, p).split(sep).join('/');
function roomOf(file: string): string | undefined {
  const parts = rel(file).split('/');
  if (parts[0] === 'src') return parts.length > 2 ? `src/${parts[1]}` : undefined;
  return parts[0];
}
const files = TOP.flatMap((d) => sources(join(ROOT, d)));
const edges = new Map(
  files.map((f) => [
    f,
    [...readFileSync(f, 'utf8').matchAll(IMPORT)].map((m) =>
      resolve(dirname(f), m[1]!.replace(/\.js$/, '.ts')),
    ),
  ]),
);
const house = JSON.parse(readFileSync(join(ROOT, 'rooms.json'), 'utf8')) as {
  imports: Record<string, string[]>;
  entryRooms: string[];
};
const rooms = house.imports;
const ENTRY_ROOMS = house.entryRooms;

function roomProblems(imports: [file: string, target: string][]): string[] {
  const bad: string[] = [];
  for (const [file, t] of imports) {
    const from = roomOf(file);
    const to = roomOf(t);
    if (!from || from === 'bench' || !to || to === from) continue;
    if (!rooms[from]!.includes(to)) bad.push(`${rel(file)} → ${rel(t)}: ${from} may not import ${to}`);
    else if (!ENTRY_ROOMS.includes(to) && !t.endsWith(`${sep}index.ts`))
      bad.push(`${rel(file)} → ${rel(t)}: enter ${to} through its index.ts`);
  }
  return bad;
}

describe('rooms', () => {
  it('every room of the table exists and every room of the tree is in the table (bench/ excepted)', () => {
    const found = new Set(files.map(roomOf).filter((r): r is string => !!r && r !== 'bench'));
    expect([...found].sort()).toEqual(Object.keys(rooms).sort());
  });

  it('each room but the entry points has an index.ts', () => {
    const missing = Object.keys(rooms).filter(
      (r) => !ENTRY_ROOMS.includes(r) && !files.includes(join(ROOT, r, 'index.ts')),
    );
    expect(missing).toEqual([]);
  });

  it('an import leaving its room goes to a room it may import, through an index.ts', () => {
    expect(roomProblems([...edges].flatMap(([f, ts]) => ts.map((t): [string, string] => [f, t])))).toEqual(
      [],
    );
  });

  it('no import circle between files', () => {
    const circles: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const visit = (file: string, path: string[]): void => {
      state.set(file, 'open');
      for (const next of edges.get(file) ?? []) {
        if (state.get(next) === 'open') circles.push([...path, file, next].map(rel).join(' → '));
        else if (!state.has(next) && edges.has(next)) visit(next, [...path, file]);
      }
      state.set(file, 'done');
    };
    for (const f of files) if (!state.has(f)) visit(f, []);
    expect(circles).toEqual([]);
  });

  it('the check finds planted violations and passes what is allowed', () => {
    const at = (p: string): string => join(ROOT, p);
    expect(
      roomProblems([
        [at('src/core/errors.ts'), at('src/jobs/index.ts')],
        [at('src/jobs/submit.ts'), at('src/hsm/hsm.ts')],
        [at('devices/serial-v1.ts'), at('src/flash/index.ts')],
        [at('src/cli/commands/worker.ts'), at('workers/pipeline.ts')],
        [at('workers/cli.ts'), at('src/cli/index.ts')],
        [at('workers/station.ts'), at('devices/index.ts')],
        [at('src/jobs/submit.ts'), at('src/hsm/index.ts')],
        [at('src/jobs/submit.ts'), at('src/jobs/journal.ts')],
      ]),
    ).toEqual([
      'src/core/errors.ts → src/jobs/index.ts: src/core may not import src/jobs',
      'src/jobs/submit.ts → src/hsm/hsm.ts: enter src/hsm through its index.ts',
      'devices/serial-v1.ts → src/flash/index.ts: devices may not import src/flash',
      'src/cli/commands/worker.ts → workers/pipeline.ts: src/cli may not import workers',
    ]);
  });
});
