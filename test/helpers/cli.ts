/** Runs the real CLI (bin/provline.js over dist/) as a child process, each call on its own budget. */
import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { afterAll } from 'vitest';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const BIN = `${ROOT}bin/provline.js`;

/** The default budget of one CLI call: generous, because a busy 2-core machine is slow. */
export const CLI_BUDGET_MS = 60_000;

export interface CliResult {
  /** The exit code; for a child ended by a signal nobody here sent, 128 + the signal number. */
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  elapsedMs: number;
}

export interface CliOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  input?: string;
  /** This call's own budget (default CLI_BUDGET_MS); past it the call rejects with CliTimeout. */
  timeoutMs?: number;
}

/** A CLI call that did not exit within its budget: the command, the time and its output so far. */
export class CliTimeout extends Error {
  constructor(
    readonly args: readonly string[],
    readonly elapsedMs: number,
    readonly budgetMs: number,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(
      `provline ${args.join(' ')} timed out: still running after ${elapsedMs} ms (budget ${budgetMs} ms)` +
        `\n--- stdout so far ---\n${tail(stdout)}\n--- stderr so far ---\n${tail(stderr)}`,
    );
    this.name = 'CliTimeout';
  }
}

const tail = (s: string, n = 4000): string => (s.length > n ? `…${s.slice(-n)}` : s);

// Children still running when a test file ends (its test timed out or failed mid-way) are
// stopped, so they do not load the machine while the next files run.
const live = new Set<ChildProcess>();
afterAll(() => {
  for (const c of live) c.kill('SIGKILL');
  live.clear();
});

export function runCli(args: string[], options: CliOptions = {}): Promise<CliResult> {
  const budgetMs = options.timeoutMs ?? CLI_BUDGET_MS;
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: options.cwd ?? ROOT,
      env: { ...process.env, PROVLINE_LOG_LEVEL: 'warn', ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    live.add(child);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // Past the budget: SIGTERM first (a graceful stop may flush logs), SIGKILL if it lingers.
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 3000).unref();
    }, budgetMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      live.delete(child);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      live.delete(child);
      const elapsedMs = Date.now() - started;
      if (timedOut) return reject(new CliTimeout(args, elapsedMs, budgetMs, stdout, stderr));
      const bySignal = signal ? 128 + (constants.signals[signal] ?? 0) : 1;
      resolve({ code: code ?? bySignal, signal, stdout, stderr, elapsedMs });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
  });
}

/** Parses stdout as JSON, with the output in the error if it is not. */
export function json<T = unknown>(r: CliResult): T {
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`not JSON (exit ${r.code}):\n${r.stdout}\n--- stderr ---\n${r.stderr}`);
  }
}
