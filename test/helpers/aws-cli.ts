/**
 * The AWS CLI v2 as a test client. `AwsCli` keeps one Python process that runs commands through
 * the CLI's own driver (test/helpers/aws-cli.py): a command then costs a request, not a second
 * of Python start-up. `awsOnce` starts the real /usr/bin/aws for one command. Every command has
 * its own budget; past it the call fails with the command, the time and the output so far.
 */
import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const SCRIPT = fileURLToPath(new URL('./aws-cli.py', import.meta.url));
/** The interpreter /usr/bin/aws runs on (its `#!` line), so both load the same awscli. */
const PYTHON = '/usr/bin/python3';
export const AWS = '/usr/bin/aws';

export interface AwsCliResult {
  rc: number;
  stdout: string;
  stderr: string;
}

const timeoutError = (args: readonly string[], ms: number, out: string, err: string): Error =>
  new Error(
    `aws ${args.join(' ').slice(0, 300)} timed out after ${ms} ms\n--- stdout so far ---\n${out}\n--- stderr so far ---\n${err}`,
  );

export class AwsCli {
  private readonly child: ChildProcessWithoutNullStreams;
  private buffered = '';
  private stderr = '';
  private pending: { resolve: (r: AwsCliResult) => void; reject: (e: Error) => void } | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(env: NodeJS.ProcessEnv) {
    this.child = spawn(PYTHON, [SCRIPT], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.on('data', (d: Buffer) => {
      this.buffered += d.toString();
      const nl = this.buffered.indexOf('\n');
      if (nl < 0 || !this.pending) return;
      const line = this.buffered.slice(0, nl);
      this.buffered = this.buffered.slice(nl + 1);
      const p = this.pending;
      this.pending = undefined;
      p.resolve(JSON.parse(line) as AwsCliResult);
    });
    this.child.stderr.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.child.once('exit', (code, signal) => {
      this.pending?.reject(new Error(`the AWS CLI driver exited (${code ?? signal}):\n${this.stderr}`));
      this.pending = undefined;
    });
  }

  /** Runs `aws <args>`; commands of one AwsCli run one after another. */
  run(args: string[], budgetMs = 30_000): Promise<AwsCliResult> {
    const next = this.queue.then(
      () =>
        new Promise<AwsCliResult>((resolve, reject) => {
          const timer = setTimeout(() => {
            this.pending = undefined;
            this.child.kill('SIGKILL');
            reject(timeoutError(args, budgetMs, this.buffered, this.stderr));
          }, budgetMs);
          this.pending = {
            resolve: (r) => (clearTimeout(timer), resolve(r)),
            reject: (e) => (clearTimeout(timer), reject(e)),
          };
          this.child.stdin.write(`${JSON.stringify(args)}\n`);
        }),
    );
    this.queue = next.catch(() => undefined);
    return next;
  }

  close(): void {
    this.child.stdin.end();
    setTimeout(() => this.child.kill('SIGKILL'), 2000).unref();
  }
}

/** One command through the real /usr/bin/aws process. */
export function awsOnce(args: string[], env: NodeJS.ProcessEnv, budgetMs = 30_000): Promise<AwsCliResult> {
  return new Promise((resolve, reject) => {
    execFile(
      AWS,
      args,
      { env, timeout: budgetMs, killSignal: 'SIGKILL', maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        if (err && (err as { killed?: boolean }).killed)
          return reject(timeoutError(args, budgetMs, stdout, stderr));
        const code = err?.code;
        if (err && typeof code !== 'number') return reject(new Error(`cannot run ${AWS}`, { cause: err }));
        resolve({ rc: typeof code === 'number' ? code : 0, stdout, stderr });
      },
    );
  });
}
