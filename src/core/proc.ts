/** Small process helpers for services provline starts itself (by pid, never by name). */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { ProvlineError, type ErrorCode } from './errors.js';

/** True if `pid` is alive and, when given, its command line contains `expect`. */
export function isAlive(pid: number | undefined, expect?: string): boolean {
  if (!pid || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  if (!expect) return true;
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (/\) Z /.test(stat)) return false; // a zombie is not a running service
    return cmdline.includes(expect);
  } catch {
    return false;
  }
}

/** Polls `check` until it returns a value other than undefined/false, or throws on timeout. */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 10_000,
  everyMs = 25,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`,
      );
    }
    await sleep(everyMs);
  }
}

/** Sends SIGTERM, waits, then SIGKILL. Resolves when the process is gone. */
export async function stopPid(pid: number, expect: string, graceMs = 10_000): Promise<void> {
  if (!isAlive(pid, expect)) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  try {
    await waitFor(`pid ${pid} to exit`, () => !isAlive(pid, expect), graceMs);
  } catch {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
    await waitFor(`pid ${pid} to die`, () => !isAlive(pid, expect), 5_000);
  }
}

/** A TCP port that was free on 127.0.0.1 a moment ago (or `preferred` if it still is). */
export async function freePort(preferred?: number): Promise<number> {
  const tryPort = (port: number): Promise<number | undefined> =>
    new Promise((resolve) => {
      const srv = createServer();
      srv.once('error', () => resolve(undefined));
      srv.listen(port, '127.0.0.1', () => {
        const addr = srv.address();
        srv.close(() => resolve(typeof addr === 'object' && addr ? addr.port : undefined));
      });
    });
  if (preferred) {
    const p = await tryPort(preferred);
    if (p) return p;
  }
  const p = await tryPort(0);
  if (!p) throw new Error('no free TCP port on 127.0.0.1');
  return p;
}

export interface WorkerProcess {
  child: ChildProcess;
  /** The first line it wrote on stdout: its ready line. */
  ready: string;
  /** Settles when it has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Starts one of provline's process entry points (`node <script> …args`) and waits for its ready
 * line, the first line on its stdout, for at most `readyMs`. It gets an IPC channel, so it can
 * stop when this process ends, however it ends. Its stderr is kept until it is ready, then passed
 * through. If it exits, cannot start or stays silent past `readyMs` (then it is killed), the
 * error carries `code` and its stderr.
 */
export async function startWorkerProcess(o: {
  what: string;
  script: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  readyMs: number;
  code: ErrorCode;
}): Promise<WorkerProcess> {
  const child = spawn(process.execPath, [o.script, ...o.args], {
    env: o.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  // Both are pipes (stdio above).
  const stdout = child.stdout!;
  const errStream = child.stderr!;
  let stderr = '';
  const keepStderr = (d: Buffer): void => {
    stderr = `${stderr}${d.toString()}`.slice(-8_000);
  };
  errStream.on('data', keepStderr);
  // 'close', not 'exit': its stderr has been read to the end by then.
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal })),
  );
  let timer: NodeJS.Timeout | undefined;
  let out = '';
  try {
    const ready = await new Promise<string>((resolve, reject) => {
      stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const nl = out.indexOf('\n');
        if (nl >= 0) resolve(out.slice(0, nl));
      });
      child.once('error', reject);
      void exited.then(({ code, signal }) =>
        reject(new Error(`it exited (${signal ?? `code ${code}`}) before it was ready`)),
      );
      timer = setTimeout(() => reject(new Error(`it was not ready within ${o.readyMs} ms`)), o.readyMs);
    });
    stdout.removeAllListeners('data');
    stdout.resume();
    errStream.off('data', keepStderr);
    errStream.pipe(process.stderr);
    return { child, ready, exited };
  } catch (e) {
    child.kill('SIGKILL');
    const last = stderr.trim();
    throw new ProvlineError(o.code, `${o.what} did not start: ${(e as Error).message}`, {
      cause: e,
      details: { script: o.script, stderr: last },
      hint: last ? `Its stderr:\n${last}` : 'It wrote nothing on stderr.',
    });
  } finally {
    clearTimeout(timer);
  }
}
