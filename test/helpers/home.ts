/** A throwaway PROVLINE_HOME per test file, with the stack stopped and removed afterwards. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stackDown } from '../../src/stack/stack.js';

export function tempDir(prefix = 'provline-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export async function removeHome(home: string): Promise<void> {
  await stackDown(home);
  rmSync(home, { recursive: true, force: true });
}
