/**
 * The flash stage's boundaries, read from the import graph (every relative import, static or
 * dynamic, followed to the end):
 * - the station builds without src/jobs: it reaches the journal only through its interface;
 * - the device simulators reach nothing of src/flash or src/jobs: they implement their protocols
 *   on their own, so the contract tests compare two independent sides;
 * - inside src/flash, no import circle;
 * - src/ as a whole (the CLI included) reaches nothing of the entry points (workers/), the
 *   stand-in (emulator/), the simulators (devices/), test/ or bench/: workers/cli.ts hands the
 *   CLI its entry points instead (src/cli/entries.ts).
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/cli.js';

const IMPORT = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)'(\.{1,2}\/[^']+)'/g;

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sources(path) : path.endsWith('.ts') ? [path] : [];
  });
}

/** The files a file imports (relative imports only; `.js` specifiers name `.ts` sources). */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(IMPORT)].map((m) => {
    const target = resolve(dirname(file), m[1]!.replace(/\.js$/, '.ts'));
    if (!existsSync(target)) throw new Error(`${relative(ROOT, file)} imports ${m[1]}, which does not exist`);
    return target;
  });
}

/** Every file reachable from `roots`, with the path by which it was first reached. */
function reachable(roots: string[]): Map<string, string[]> {
  const seen = new Map<string, string[]>(roots.map((r) => [r, [r]]));
  const todo = [...roots];
  for (let file = todo.pop(); file; file = todo.pop()) {
    for (const next of importsOf(file)) {
      if (seen.has(next)) continue;
      seen.set(next, [...seen.get(file)!, next]);
      todo.push(next);
    }
  }
  return seen;
}

const rel = (p: string): string => relative(ROOT, p);

function violations(fromDir: string, forbidden: string[]): string[] {
  const graph = reachable(sources(join(ROOT, fromDir)));
  return [...graph.entries()]
    .filter(([file]) => forbidden.some((f) => rel(file).startsWith(f)))
    .map(([, path]) => path.map(rel).join(' → '));
}

describe('flash boundaries', () => {
  it('src/flash (the station included) reaches nothing of src/jobs, devices/ or emulator/', () => {
    expect(violations('src/flash', ['src/jobs/', 'devices/', 'emulator/'])).toEqual([]);
  });

  it('devices/ reaches nothing of src/flash or src/jobs', () => {
    expect(violations('devices', ['src/flash/', 'src/jobs/'])).toEqual([]);
  });

  it('src/ reaches nothing of workers/, devices/, emulator/, test/ or bench/', () => {
    expect(violations('src', ['workers/', 'devices/', 'emulator/', 'test/', 'bench/'])).toEqual([]);
  });

  it('the provline process reaches the simulators through workers/devices.ts', () => {
    // workers/cli.ts loads the fault parser at start (device-sim checks --faults while parsing);
    // the simulators themselves come with workers/devices.ts's dynamic import.
    const graph = reachable([join(ROOT, 'workers/cli.ts')]);
    const path = graph.get(join(ROOT, 'devices/index.ts'));
    expect(path?.map(rel)).toEqual(['workers/cli.ts', 'workers/devices.ts', 'devices/index.ts']);
  });

  it('src/flash has no import circle', () => {
    const files = sources(join(ROOT, 'src/flash'));
    const inFlash = new Set(files);
    const circles: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const visit = (file: string, path: string[]): void => {
      state.set(file, 'open');
      for (const next of importsOf(file).filter((f) => inFlash.has(f))) {
        if (state.get(next) === 'open') circles.push([...path, file, next].map(rel).join(' → '));
        else if (!state.has(next)) visit(next, [...path, file]);
      }
      state.set(file, 'done');
    };
    for (const f of files) if (!state.has(f)) visit(f, []);
    expect(circles).toEqual([]);
  });

  it('the checks can fail: the graph does see a known import', () => {
    const graph = reachable([join(ROOT, 'src/flash/station/store.ts')]);
    expect([...graph.keys()].map(rel)).toContain('src/batch/journal.ts');
  });
});
