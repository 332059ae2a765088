/**
 * startWorkerProcess (src/core/proc.ts), the way the CLI runs an entry point as a child: it
 * waits for the ready line within its own budget, and a child that exits first or stays silent
 * is reported with its stderr (and killed), never waited for.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isAlive, startWorkerProcess, waitFor } from '../../src/core/proc.js';
import { removeHome, tempDir } from '../helpers/home.js';

const dir = tempDir('provline-worker-process-');
afterAll(() => removeHome(dir));

function script(name: string, body: string): string {
  const file = join(dir, name);
  writeFileSync(file, body);
  return file;
}

const start = (file: string, readyMs: number): ReturnType<typeof startWorkerProcess> =>
  startWorkerProcess({
    what: 'the test child',
    script: file,
    args: ['--x'],
    readyMs,
    code: 'STACK_AWS_FAILED',
  });

describe('startWorkerProcess', () => {
  it('returns the ready line and a handle to stop the child', async () => {
    const file = script(
      'ready.mjs',
      `process.on('SIGTERM', () => process.exit(0));
       process.stdout.write(JSON.stringify({ argv: process.argv.slice(2), ipc: typeof process.send }) + '\\n');
       setInterval(() => {}, 1000);`,
    );
    const w = await start(file, 30_000);
    expect(JSON.parse(w.ready)).toEqual({ argv: ['--x'], ipc: 'function' });
    w.child.kill('SIGTERM');
    expect(await w.exited).toEqual({ code: 0, signal: null });
  });

  it('a child that exits before it is ready: the error says so and carries its stderr', async () => {
    const file = script('fails.mjs', `process.stderr.write('cannot bind: EADDRINUSE\\n'); process.exit(3);`);
    const err = await start(file, 30_000).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: 'STACK_AWS_FAILED',
      message: 'the test child did not start: it exited (code 3) before it was ready',
      details: { stderr: 'cannot bind: EADDRINUSE' },
    });
    expect((err as { hint: string }).hint).toContain('cannot bind: EADDRINUSE');
  });

  it('a child silent past its budget is killed and reported with what it wrote on stderr', async () => {
    const file = script(
      'silent.mjs',
      `process.stderr.write('pid ' + process.pid + ' waiting\\n'); setInterval(() => {}, 1000);`,
    );
    const started = Date.now();
    const err = await start(file, 5_000).catch((e: unknown) => e);
    expect(Date.now() - started).toBeGreaterThanOrEqual(5_000);
    expect(err).toMatchObject({
      code: 'STACK_AWS_FAILED',
      message: 'the test child did not start: it was not ready within 5000 ms',
    });
    const pid = Number(/pid (\d+)/.exec((err as { details: { stderr: string } }).details.stderr)?.[1]);
    expect(pid).toBeGreaterThan(0);
    await waitFor('the silent child to be gone', () => !isAlive(pid, 'silent.mjs'), 10_000);
  });
});
