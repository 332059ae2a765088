/**
 * `provline demo`: the main job on embedded defaults, end to end as far as the stages built so
 * far reach. It brings the local stack up, writes a demo CSV, runs it through every available
 * stage, prints what happened, and stops what it started unless --keep.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { validateCsvFile } from '../../batch/intake.js';
import { getProfile } from '../../config/load.js';
import { ProvlineError } from '../../core/errors.js';
import { openHsm, type Hsm } from '../../hsm/hsm.js';
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
        for (let i = 1; i <= opts.devices; i++)
          lines.push(`DEMO${String(i).padStart(6, '0')},${'ABC'[i % 3]}`);
        writeFileSync(csv, `${lines.join('\n')}\n`);
        step(`intake: ${csv} (${opts.devices} devices, profile ${profile.name})`);
        const result = await validateCsvFile(csv, profile);
        if (!result.valid) {
          throw new ProvlineError(
            'DEMO_FAILED',
            `the demo batch did not validate (${result.problemCount} problems)`,
          );
        }
        c.print(
          `    valid: ${result.validRows} devices, thing names ${profile.thingName.replace('{serial}', 'DEMO000001')} …`,
        );

        step(`HSM: a key pair and a CSR per device inside the SoftHSM token, keys exported wrapped`);
        const hsm = await openHsm(await c.hsmSettings());
        try {
          await ensureDemoKek(hsm, profile.kekLabel, join(dir, 'demo-kek.bin'));
          const out = join(dir, 'identities');
          mkdirSync(out, { recursive: true });
          const t0 = performance.now();
          for (let i = 1; i <= opts.devices; i++) {
            const serial = `DEMO${String(i).padStart(6, '0')}`;
            const id = await hsm.createDeviceIdentity({
              serial,
              thingName: profile.thingName.replace('{serial}', serial),
              keyType: profile.keyType,
              kekLabel: profile.kekLabel,
              subject: profile.csrSubject,
            });
            writeFileSync(join(out, `${serial}.csr.pem`), id.csrPem);
            writeFileSync(join(out, `${serial}.key.wrapped`), Buffer.from(id.wrappedKey, 'base64'));
          }
          const seconds = (performance.now() - t0) / 1000;
          c.print(
            `    ${opts.devices} identities in ${seconds.toFixed(2)} s (${Math.round(opts.devices / seconds)}/s), CSRs and wrapped keys in ${out}`,
          );
        } finally {
          hsm.close();
        }
        c.print('    registration with AWS IoT and flashing arrive with the next stages (see README status)');
      } finally {
        if (!opts.keep && !wasRunning) {
          step('stopping the local stack (use --keep to leave it running)');
          await stackDown(home);
        }
      }
      step('done');
    });
}

/**
 * The demo's transport KEK: a random AES-256 key imported into the HSM, with its raw value kept
 * (0600) in the demo directory because the simulated devices must hold the same key, as a real
 * device maker would. A production KEK is created in the HSM or agreed out of band.
 */
async function ensureDemoKek(hsm: Hsm, label: string, file: string): Promise<void> {
  const existing = await hsm.findKek(label);
  if (existing && existsSync(file)) return;
  if (existing) {
    throw new ProvlineError(
      'DEMO_FAILED',
      `the HSM holds a KEK "${label}" whose value the demo devices do not have (${file} is missing)`,
      {
        hint: 'Remove the demo home (or its hsm/ directory) and run the demo again.',
      },
    );
  }
  const value = existsSync(file) ? readFileSync(file) : randomBytes(32);
  writeFileSync(file, value, { mode: 0o600 });
  await hsm.importKek({ label, value });
}
