import type { Command } from 'commander';
import { ProvlineError } from '../../core/errors.js';
import { ROLES, type Role } from '../../jobs/queues.js';
import { startRunner, sweepActive } from '../../jobs/runner.js';
import { requireRedis } from '../../stack/runtime.js';
import type { CommandContext } from '../context.js';

export function registerWorker(program: Command, ctx: () => CommandContext): void {
  program
    .command('worker')
    .description('Run pipeline workers (HSM stage, registrar) until SIGTERM or Ctrl-C')
    .option('--roles <list>', 'comma-separated roles: hsm, registrar', ROLES.join(','))
    .option('--no-sweep', 'do not re-enqueue the work of unfinished batches at start')
    .addHelpText(
      'after',
      '\nAny number of workers on any number of hosts share one Redis. SIGTERM drains: jobs in flight\nfinish or are handed back, then the process exits 0.\n',
    )
    .action(async (opts: { roles: string; sweep: boolean }) => {
      const c = ctx();
      const roles = opts.roles
        .split(',')
        .map((r) => r.trim())
        .filter(Boolean);
      const bad = roles.filter((r) => !(ROLES as readonly string[]).includes(r));
      if (bad.length || !roles.length)
        throw new ProvlineError('USAGE', `unknown role(s) "${bad.join(',') || opts.roles}"`, {
          kind: 'usage',
          hint: `Roles are: ${ROLES.join(', ')}.`,
        });
      const redisUrl = requireRedis(c.runtime);
      const prefix = c.loaded.config.redis.prefix;
      const log = c.logger;
      if (opts.sweep) {
        const n = await sweepActive(redisUrl, prefix, c.loaded.config.workers.hsmChunk);
        if (n) log.info({ batches: n }, 'unfinished batches re-enqueued');
      }
      const runner = await startRunner({
        redisUrl,
        runtime: c.runtime,
        workers: c.loaded.config.workers,
        roles: roles as Role[],
        prefix,
        log,
        hsmSettings: () => c.hsmSettings(),
      });
      process.stderr.write(`provline worker ${process.pid}: roles ${roles.join(',')}, ready\n`);
      await new Promise<void>((resolve) => {
        const stop = (sig: string): void => {
          process.stderr.write(`provline worker ${process.pid}: ${sig}, draining\n`);
          resolve();
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
      await runner.close();
      process.stderr.write(
        `provline worker ${process.pid}: stopped (${runner.done.hsm} HSM jobs, ${runner.done.register} batches)\n`,
      );
    });
}
