/**
 * The command tree. Each command lives in commands/<name>.ts as a register function; this file
 * only assembles them. Commands throw; they never call process.exit (main.ts picks the code, workers/cli.ts exits).
 */
import { Command } from 'commander';
import { packageVersion } from '../core/index.js';
import { CommandContext, type GlobalOptions } from './context.js';
import { NO_ENTRIES, type Entries } from './entries.js';
import { registerDemo } from './commands/demo.js';
import { registerDevice } from './commands/device.js';
import { registerDeviceSim } from './commands/device-sim.js';
import { registerHsm } from './commands/hsm.js';
import { registerCa } from './commands/ca.js';
import { registerCert } from './commands/cert.js';
import { registerClaim } from './commands/claim.js';
import { registerEmulator } from './commands/emulator.js';
import { registerProfiles } from './commands/profiles.js';
import { registerStack } from './commands/stack.js';
import { registerStation } from './commands/station.js';
import { registerValidate } from './commands/validate.js';
import { registerSubmit } from './commands/submit.js';
import { registerWorker } from './commands/worker.js';
import { registerBatchCommands } from './commands/batch.js';
import { registerReconcile } from './commands/reconcile.js';
import { registerJitrActivator } from './commands/jitr-activator.js';
import { registerRehearse } from './commands/rehearse.js';

export function buildProgram(
  out: NodeJS.WritableStream = process.stdout,
  env: NodeJS.ProcessEnv = process.env,
  entries: Entries = NO_ENTRIES,
): Command {
  const program = new Command('provline')
    .description('Provision IoT devices into AWS IoT Core on a factory line')
    .version(packageVersion(), '-V, --version')
    .option(
      '-c, --config <file>',
      'config file (default ./provline.config.yaml if present; env PROVLINE_CONFIG)',
    )
    .option('--home <dir>', 'stack home (default ./.provline; env PROVLINE_HOME)')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({ writeOut: (s) => out.write(s) });

  let context: CommandContext | undefined;
  const ctx = (): CommandContext =>
    (context ??= new CommandContext(program.opts<GlobalOptions>(), out, env, undefined, entries));

  registerStack(program, ctx);
  registerValidate(program, ctx);
  registerSubmit(program, ctx);
  registerBatchCommands(program, ctx);
  registerReconcile(program, ctx);
  registerDevice(program, ctx);
  registerWorker(program, ctx);
  registerProfiles(program, ctx);
  registerEmulator(program, ctx);
  registerDemo(program, ctx);
  registerRehearse(program, ctx);
  registerDeviceSim(program, ctx);
  registerHsm(program, ctx);
  registerCa(program, ctx);
  registerCert(program, ctx);
  registerJitrActivator(program, ctx);
  registerClaim(program, ctx);
  registerStation(program, ctx);

  // Every subcommand inherits exitOverride and the output settings.
  const walk = (cmd: Command): void => {
    for (const sub of cmd.commands) {
      sub
        .exitOverride()
        .configureOutput({ writeOut: (s) => out.write(s) })
        .showHelpAfterError('(run with --help for usage)');
      walk(sub);
    }
  };
  walk(program);
  return program;
}
