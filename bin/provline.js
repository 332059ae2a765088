#!/usr/bin/env node
// Thin launcher: the CLI is compiled to dist/ by `npm run build` (scripts/bootstrap.sh runs it).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const entry = fileURLToPath(new URL('../dist/workers/cli.js', import.meta.url));
if (!existsSync(entry)) {
  process.stderr.write(
    'provline is not built yet: run `npm run bootstrap` (or `npm ci && npm run build`).\n',
  );
  process.exit(1);
}
await import(entry);
