// Makes sure dist/ is current before tests that spawn the CLI run (npm test has already run
// the full bootstrap; this covers `npx vitest` during development).
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export default function setup(): void {
  const root = fileURLToPath(new URL('..', import.meta.url));
  execFileSync('bash', ['scripts/bootstrap.sh'], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, PROVLINE_SKIP_APT: '1' },
  });
}
