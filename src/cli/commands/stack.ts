import type { Command } from 'commander';
import { stackDown, stackStatus, stackUp, type StackStatus } from '../../stack/index.js';
import type { CommandContext } from '../context.js';

export function registerStack(program: Command, ctx: () => CommandContext): void {
  const stack = program
    .command('stack')
    .description('Manage the local stack under $PROVLINE_HOME: Redis, a SoftHSM token, the AWS IoT stand-in');

  stack
    .command('up')
    .description('Start (or keep running) the local services; idempotent')
    .option('--json', 'print the status as JSON')
    .action(async (opts: { json?: boolean }) => {
      const c = ctx();
      show(c, await stackUp(c.loaded.home), opts.json);
    });

  stack
    .command('down')
    .description('Stop every process `stack up` started; data stays in the home')
    .option('--json', 'print the status as JSON')
    .action(async (opts: { json?: boolean }) => {
      const c = ctx();
      show(c, await stackDown(c.loaded.home), opts.json);
    });

  stack
    .command('status')
    .description('Show where the local services are and whether they run')
    .option('--json', 'print the status as JSON')
    .action((opts: { json?: boolean }) => {
      const c = ctx();
      show(c, stackStatus(c.loaded.home), opts.json);
    });
}

function show(c: CommandContext, s: StackStatus, json: boolean | undefined): void {
  if (json) return c.json(s);
  const state = (running: boolean): string => (running ? 'running' : 'stopped');
  c.print(
    [
      `home   ${s.home}`,
      `redis  ${state(s.redis.running)}${s.redis.url ? `  ${s.redis.url}` : ''}${s.redis.pid ? `  pid ${s.redis.pid}` : ''}`,
      `hsm    ${s.hsm.initialized ? 'token ready' : 'not initialised'}  token "${s.hsm.token}"  SOFTHSM2_CONF=${s.hsm.softhsm2Conf}  pin file ${s.hsm.pinFile}`,
      `aws    ${s.aws.endpoint ? `${state(s.aws.running)}  ${s.aws.endpoint}  mqtt ${s.aws.mqttEndpoint ?? '-'}  region ${s.aws.region}  bucket ${s.aws.bucket}` : 'stand-in not available yet'}`,
    ].join('\n'),
  );
}
