/**
 * `provline demo`: the main job on embedded defaults, end to end as far as the stages built so
 * far reach. It brings the local stack up, writes a demo CSV, runs it through every available
 * stage, prints what happened, and stops what it started unless --keep.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { validateCsvFile } from '../../batch/intake.js';
import { getProfile } from '../../config/load.js';
import { ProvlineError } from '../../core/errors.js';
import { stackDown, stackStatus, stackUp } from '../../stack/stack.js';
import type { CommandContext } from '../context.js';
import { intOption } from '../options.js';

export function registerDemo(program: Command, ctx: () => CommandContext): void {
  program
    .command('demo')
    .description('Run the main job on embedded defaults: local stack, a demo batch, every stage built so far')
    .option('--devices <n>', 'devices in the demo batch', intOption('--devices', 1, 100_000), 24)
    .option('--keep', 'leave the local stack running afterwards')
    .action(async (opts: { devices: number; keep?: boolean }) => {
      const c = ctx();
      const home = c.loaded.home;
      const wasRunning = stackStatus(home).redis.running;
      const step = (s: string): void => c.print(`==> ${s}`);

      step(`local stack in ${home}`);
      const status = await stackUp(home);
      c.print(`    redis ${status.redis.url}, SoftHSM token "${status.hsm.token}"`);
      try {
        const profile = getProfile(c.loaded, 'demo');
        const dir = join(home, 'demo');
        mkdirSync(dir, { recursive: true });
        const csv = join(dir, 'batch.csv');
        const lines = ['serial,hw_rev'];
        for (let i = 1; i <= opts.devices; i++) lines.push(`DEMO${String(i).padStart(6, '0')},${'ABC'[i % 3]}`);
        writeFileSync(csv, `${lines.join('\n')}\n`);
        step(`intake: ${csv} (${opts.devices} devices, profile ${profile.name})`);
        const result = await validateCsvFile(csv, profile);
        if (!result.valid) {
          throw new ProvlineError('DEMO_FAILED', `the demo batch did not validate (${result.problemCount} problems)`);
        }
        c.print(`    valid: ${result.validRows} devices, thing names ${profile.thingName.replace('{serial}', 'DEMO000001')} …`);
      } finally {
        if (!opts.keep && !wasRunning) {
          step('stopping the local stack (use --keep to leave it running)');
          await stackDown(home);
        }
      }
      step('done');
    });
}
