/** A throwaway PROVLINE_HOME per test file, with the stack stopped and removed afterwards. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { stackDown } from '../../src/stack/stack.js';

const made: string[] = [];
// Each test file removes the scratch directories it made once its tests are done (vitest
// evaluates this helper once per file). Stacks are stopped by removeHome in the file itself.
// A directory that holds a stack home has its stack stopped first, whatever the hook order.
afterAll(async () => {
  for (const dir of made.splice(0)) await removeHome(dir);
});

/** A scratch directory, removed (stack stopped first) after the test file. */
export function tempDir(prefix = 'provline-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

export async function removeHome(home: string): Promise<void> {
  await stackDown(home);
  rmSync(home, { recursive: true, force: true });
}
