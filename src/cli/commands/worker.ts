import type { Command } from 'commander';
import { ProvlineError } from '../../core/index.js';
import { ROLES, type Role } from '../../jobs/index.js';
import { requireRedis } from '../../stack/index.js';
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
      await c.entries.pipelineWorker({
        redisUrl: requireRedis(c.runtime),
        runtime: c.runtime,
        config: c.loaded.config,
        roles: roles as Role[],
        sweep: opts.sweep,
        log: c.logger,
        hsmSettings: () => c.hsmSettings(),
      });
    });
}
