#!/usr/bin/env node
/**
 * The CLI entry point and the only place that exits: every outcome becomes an exit code here
 * (0 ok, 1 failed, 2 usage, 3 invalid input, 4 partly failed).
 */
import 'reflect-metadata';
import { CommanderError } from 'commander';
import { isProvlineError, messageOf } from '../core/errors.js';
import { EXIT, exitCodeFor, ExitCode } from './exit.js';
import { buildProgram } from './program.js';

// The AWS SDK warns that versions published after January 2027 will need Node 22; provline pins
// its SDK version and supports Node 20, so the warning is noise for operators.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

// `provline report … | head`: a closed pipe ends the output, not the process with a trace.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
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

const code = await main(process.argv);
// Let stdout drain before exiting; pending handles (pools, sockets) must not keep us alive.
process.stdout.write('', () => process.exit(code));
