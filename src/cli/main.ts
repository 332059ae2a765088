/**
 * Runs one provline command line and turns every outcome into an exit code (0 ok, 1 failed,
 * 2 usage, 3 invalid input, 4 partly failed), reporting errors on stderr. The process around
 * it (workers/cli.ts) passes the entry points in and exits with the code.
 */
import { CommanderError } from 'commander';
import { isProvlineError, messageOf } from '../core/index.js';
import type { Entries } from './entries.js';
import { EXIT, exitCodeFor, ExitCode } from './exit.js';
import { buildProgram } from './program.js';

export async function runCli(argv: string[], entries: Entries): Promise<number> {
  const program = buildProgram(process.stdout, process.env, entries);
  try {
    await program.parseAsync(argv);
    return EXIT.ok;
  } catch (e) {
    return report(e, argv.includes('--json'));
  }
}

function report(e: unknown, json: boolean): number {
  if (e instanceof ExitCode) return e.code;
  if (e instanceof CommanderError) {
    // --help and --version end here with exit code 0; commander already printed its message.
    return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
  }
  if (isProvlineError(e)) {
    const code = exitCodeFor(e.kind);
    if (json) process.stdout.write(`${JSON.stringify({ error: e.toJSON() }, null, 2)}\n`);
    process.stderr.write(`provline: ${e.message} [${e.code}]\n${e.hint ? `  hint: ${e.hint}\n` : ''}`);
    if (process.env.PROVLINE_DEBUG && e.cause) process.stderr.write(`  cause: ${messageOf(e.cause)}\n`);
    return code;
  }
  process.stderr.write(`provline: unexpected error: ${messageOf(e)}\n`);
  if (process.env.PROVLINE_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
  else process.stderr.write('  (set PROVLINE_DEBUG=1 for the stack trace; please report this as a bug)\n');
  return EXIT.failed;
}
