import type { Command } from 'commander';
import { getProfile } from '../../config/index.js';
import type { CommandContext } from '../context.js';

export function registerProfiles(program: Command, ctx: () => CommandContext): void {
  program
    .command('profiles')
    .description('List the product profiles, or show one in full')
    .argument('[name]', 'a profile to show')
    .option('--json', 'print as JSON')
    .action((name: string | undefined, opts: { json?: boolean }) => {
      const c = ctx();
      if (name) {
        const p = getProfile(c.loaded, name);
        if (opts.json) return c.json(p);
        return c.print(JSON.stringify(p, null, 2));
      }
      const list = [...c.loaded.profiles.values()].map((p) => ({
        name: p.name,
        description: p.description,
        keyType: p.keyType,
        keyDelivery: p.keyDelivery,
        driver: p.driver,
        registration: p.registration.mode,
        source: p.source,
      }));
      if (opts.json) return c.json(list);
      c.print(
        list
          .map(
            (p) =>
              `${p.name.padEnd(16)} ${p.keyType.padEnd(9)} ${p.keyDelivery.padEnd(8)} ${p.driver.padEnd(19)} ${p.description}`,
          )
          .join('\n'),
      );
    });
}
