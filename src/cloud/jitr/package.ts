/**
 * The Lambda deployment package of the JITR activator: the compiled handler (lambda.js, as
 * `index.js`, so the handler is `index.handler`) and the modules it imports, a package.json
 * that makes them ES modules, and optionally the factory CA certificates as
 * `ca-certificates.pem` (then PROVLINE_JITR_CA_CERTS=ca-certificates.pem).
 *
 * The handler's imports are followed from the compiled files and each one is checked: a
 * relative module of this folder, a node builtin, or @aws-sdk/client-iot (which the Lambda
 * Node.js runtime provides). Anything else is refused, naming the file and the import, so the
 * package never depends on what is not there.
 */
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ProvlineError } from '../../core/index.js';
import { zip, type ZipEntry } from './zip.js';

/** Bare imports the Lambda runtime provides. */
export const RUNTIME_MODULES = ['@aws-sdk/client-iot'];
export const CA_FILE = 'ca-certificates.pem';
export const HANDLER = 'index.handler';

const IMPORT_RE =
  /(?:^|[;\n])\s*(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|(?:^|[;\n])\s*import\s*['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/g;

/** The import specifiers of one compiled ES module. */
export function importsOf(source: string): string[] {
  return [...source.matchAll(IMPORT_RE)].map((m) => m[1] ?? m[2] ?? m[3]!);
}

function packageError(message: string, details: Record<string, unknown>): ProvlineError {
  return new ProvlineError('JITR_PACKAGE_INVALID', message, {
    kind: 'failed',
    hint: 'The Lambda handler may import only its own folder, node builtins and @aws-sdk/client-iot; rebuild with `npm run build` first.',
    details,
  });
}

/** The package's files: the handler's import closure from `jitrDir` (the compiled src/cloud/jitr). */
export function lambdaFiles(jitrDir: string): ZipEntry[] {
  const entry = join(jitrDir, 'lambda.js');
  if (!existsSync(entry)) throw packageError(`the compiled handler ${entry} does not exist`, { file: entry });
  const seen = new Map<string, Buffer>();
  const queue = [entry];
  while (queue.length) {
    const file = queue.shift()!;
    if (seen.has(file)) continue;
    const data = readFileSync(file);
    seen.set(file, data);
    for (const spec of importsOf(data.toString('utf8'))) {
      if (spec.startsWith('node:') || RUNTIME_MODULES.includes(spec)) continue;
      if (!spec.startsWith('./'))
        throw packageError(`${basename(file)} imports "${spec}", which the Lambda runtime does not provide`, {
          file,
          import: spec,
        });
      const target = join(dirname(file), spec);
      if (dirname(target) !== jitrDir || !existsSync(target))
        throw packageError(
          `${basename(file)} imports "${spec}", which is not a module of the handler's folder`,
          {
            file,
            import: spec,
          },
        );
      queue.push(target);
    }
  }
  return [...seen].map(([file, data]) => ({ name: file === entry ? 'index.js' : basename(file), data }));
}

/** The zip: package.json, the handler's files, and the CA certificates when given. */
export function lambdaPackage(jitrDir: string, caCertificatesPem?: string): { zip: Buffer; files: string[] } {
  const entries: ZipEntry[] = [
    { name: 'package.json', data: Buffer.from(`${JSON.stringify({ type: 'module' }, null, 2)}\n`) },
    ...lambdaFiles(jitrDir),
    ...(caCertificatesPem ? [{ name: CA_FILE, data: Buffer.from(caCertificatesPem) }] : []),
  ];
  return { zip: zip(entries), files: entries.map((e) => e.name) };
}
