// Makes sure dist/ is current before tests that spawn the CLI run. `npm test` has already run
// the full bootstrap, strictly; this covers `npx vitest` during development, where a type
// error elsewhere in the tree should not stop unrelated tests (tsc still emits JavaScript).
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export default function setup(): void {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const r = spawnSync('bash', ['scripts/bootstrap.sh'], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, PROVLINE_SKIP_APT: '1' },
  });
  if (r.status !== 0)
    process.stderr.write('global-setup: the build reported errors; CLI tests run against what was emitted\n');
}
