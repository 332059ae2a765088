/**
 * A Lambda deployment package of a handler that ships without the rest of provline: the
 * compiled entry module (as `index.js`, so the handler is `index.handler`) and the modules it
 * imports, with a package.json that makes them ES modules, zipped. The entry's imports are
 * followed from the compiled files and each one is checked: a relative module of the entry's
 * folder, a node builtin, or one of the bare modules the Lambda Node.js runtime provides.
 * Anything else is refused, naming the file and the import, so a package never depends on
 * what is not there. The JITR activator (jitr/package.ts) and the pre-provisioning hook
 * (hook/package.ts) are packaged this way.
 */
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { zip, type ZipEntry } from './zip.js';

export interface LambdaSpec {
  /** The compiled handler's folder. */
  dir: string;
  /** The entry module's file name in `dir`; it becomes `index.js`. */
  entry: string;
  /** Bare imports the Lambda runtime provides. */
  runtimeModules: readonly string[];
  /** The error to throw, for a missing entry or a forbidden import. */
  fail: (message: string, details: Record<string, unknown>) => Error;
}

const IMPORT_RE =
  /(?:^|[;\n])\s*(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|(?:^|[;\n])\s*import\s*['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/g;

/** The import specifiers of one compiled ES module. */
export function importsOf(source: string): string[] {
  return [...source.matchAll(IMPORT_RE)].map((m) => m[1] ?? m[2] ?? m[3]!);
}

/** The package's files: the entry's import closure in `spec.dir`. */
export function lambdaFiles(spec: LambdaSpec): ZipEntry[] {
  const entry = join(spec.dir, spec.entry);
  if (!existsSync(entry)) throw spec.fail(`the compiled handler ${entry} does not exist`, { file: entry });
  const seen = new Map<string, Buffer>();
  const queue = [entry];
  while (queue.length) {
    const file = queue.shift()!;
    if (seen.has(file)) continue;
    const data = readFileSync(file);
    seen.set(file, data);
    for (const spec0 of importsOf(data.toString('utf8'))) {
      if (spec0.startsWith('node:') || spec.runtimeModules.includes(spec0)) continue;
      if (!spec0.startsWith('./'))
        throw spec.fail(`${basename(file)} imports "${spec0}", which the Lambda runtime does not provide`, {
          file,
          import: spec0,
        });
      const target = join(dirname(file), spec0);
      if (dirname(target) !== spec.dir || !existsSync(target))
        throw spec.fail(
          `${basename(file)} imports "${spec0}", which is not a module of the handler's folder`,
          {
            file,
            import: spec0,
          },
        );
      queue.push(target);
    }
  }
  return [...seen].map(([file, data]) => ({ name: file === entry ? 'index.js' : basename(file), data }));
}

/** The zip: package.json (`"type": "module"`), the handler's files, and any extra entries. */
export function lambdaZip(spec: LambdaSpec, extra: ZipEntry[] = []): { zip: Buffer; files: string[] } {
  const entries: ZipEntry[] = [
    { name: 'package.json', data: Buffer.from(`${JSON.stringify({ type: 'module' }, null, 2)}\n`) },
    ...lambdaFiles(spec),
    ...extra,
  ];
  return { zip: zip(entries), files: entries.map((e) => e.name) };
}
