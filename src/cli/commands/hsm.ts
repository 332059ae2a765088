/**
 * `provline hsm info | kek create | kek import | keygen | bench`: the HSM stage by hand. The PIN
 * is never an option: it comes from hsm.pinFile or the variable named by hsm.pinEnv.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Option, type Command } from 'commander';
import { getProfile, KEY_TYPES, type KeyType } from '../../config/index.js';
import { compilePattern } from '../../batch/index.js';
import { ProvlineError, usageError } from '../../core/index.js';
import {
  BENCH_WORKS,
  DEFAULT_BENCH_DEVICES,
  runHsmBench,
  runHsmBenchAll,
  type BenchResult,
  type BenchWork,
  openHsm,
  type Hsm,
  type HsmInfo,
  parseKekFile,
} from '../../hsm/index.js';
import type { CommandContext } from '../context.js';
import { intOption } from '../options.js';

/** Opens the configured HSM for one command and closes it afterwards. */
export async function withHsm<T>(c: CommandContext, fn: (hsm: Hsm) => Promise<T>): Promise<T> {
  const hsm = await openHsm(await c.hsmSettings(), { env: c.env });
  try {
    return await fn(hsm);
  } finally {
    hsm.close();
  }
}

export function registerHsm(program: Command, ctx: () => CommandContext): void {
  const hsm = program
    .command('hsm')
    .description('The HSM stage: token info, transport KEKs, device keys and CSRs, throughput')
    .addHelpText(
      'after',
      '\nThe user PIN comes from hsm.pinFile (PROVLINE_HSM_PIN_FILE) or the variable named by hsm.pinEnv (default PROVLINE_HSM_PIN); it is never a command-line option.\n',
    );

  hsm
    .command('info')
    .description('Show the PKCS#11 module, the token, session limits and the mechanisms provline needs')
    .option('--json', 'print as JSON')
    .action(async (opts: { json?: boolean }) => {
      const c = ctx();
      const info = await withHsm(c, (h) => Promise.resolve(h.info()));
      if (opts.json) c.json(info);
      else c.print(formatInfo(info));
    });

  const kek = hsm
    .command('kek')
    .description("Manage a profile's transport KEK (AES-256, never leaves the HSM)");

  kek
    .command('create')
    .description("Generate the profile's KEK inside the HSM (refuses if the label exists)")
    .requiredOption('-p, --profile <name>', 'product profile; its kekLabel names the key')
    .option('--json', 'print as JSON')
    .action(async (opts: { profile: string; json?: boolean }) => {
      const c = ctx();
      const profile = getProfile(c.loaded, opts.profile);
      const made = await withHsm(c, (h) => h.createKek({ label: profile.kekLabel }));
      if (opts.json) c.json({ profile: profile.name, kek: made });
      else c.print(`created KEK "${made.label}" for profile ${profile.name}\n  ${made.uri}`);
    });

  kek
    .command('import')
    .description(
      "Import a known AES-256 value as the profile's KEK (keys agreed with a device maker; demo and tests)",
    )
    .requiredOption('-p, --profile <name>', 'product profile; its kekLabel names the key')
    .requiredOption('-f, --file <path>', 'file with the key: 32 raw bytes or 64 hex digits')
    .option('--json', 'print as JSON')
    .action(async (opts: { profile: string; file: string; json?: boolean }) => {
      const c = ctx();
      const profile = getProfile(c.loaded, opts.profile);
      let content: Buffer;
      try {
        content = readFileSync(opts.file);
      } catch (e) {
        throw new ProvlineError('HSM_KEK_FILE_INVALID', `cannot read the KEK file ${opts.file}`, {
          kind: 'invalid-input',
          cause: e,
        });
      }
      const value = parseKekFile(content);
      const made = await withHsm(c, (h) => h.importKek({ label: profile.kekLabel, value }));
      value.fill(0);
      if (opts.json) c.json({ profile: profile.name, kek: made });
      else c.print(`imported KEK "${made.label}" for profile ${profile.name}\n  ${made.uri}`);
    });

  hsm
    .command('keygen')
    .description(
      'Create one device identity: key pair in the HSM, CSR signed there, private key exported wrapped',
    )
    .requiredOption('-p, --profile <name>', 'product profile (keyType, kekLabel, csrSubject, thingName)')
    .requiredOption('-s, --serial <serial>', 'device serial number')
    .requiredOption('-o, --out-dir <dir>', 'writes <serial>.csr.pem and <serial>.key.wrapped here')
    .option(
      '--thing-name <name>',
      "thing name (default: the profile's thingName pattern applied to the serial)",
    )
    .option('--json', 'accepted for symmetry: keygen always prints JSON (errors too, with --json)')
    .action(async (opts: { profile: string; serial: string; outDir: string; thingName?: string }) => {
      const c = ctx();
      const profile = getProfile(c.loaded, opts.profile);
      const thingName = opts.thingName ?? thingNameFor(profile.thingName, opts.serial);
      const id = await withHsm(c, (h) =>
        h.createDeviceIdentity({
          serial: opts.serial,
          thingName,
          keyType: profile.keyType,
          kekLabel: profile.kekLabel,
          subject: profile.csrSubject,
        }),
      );
      mkdirSync(opts.outDir, { recursive: true });
      const csrFile = join(opts.outDir, `${opts.serial}.csr.pem`);
      const keyFile = join(opts.outDir, `${opts.serial}.key.wrapped`);
      writeFileSync(csrFile, `${id.csrPem}\n`);
      writeFileSync(keyFile, Buffer.from(id.wrappedKey, 'base64'));
      c.json({ ...id, files: { csr: csrFile, wrappedKey: keyFile } });
    });

  hsm
    .command('bench')
    .description(
      "Measure provline's devices/s for one work (or all) against a C program doing the same PKCS#11 calls on the same token",
    )
    .addOption(
      new Option(
        '--work <work>',
        'per device: csr = key pair + CSR + wrap; ca-key = key pair + certificate signed by a factory CA + wrap; ca-csr = certificate for a given public key; all = each in turn',
      )
        .choices([...BENCH_WORKS, 'all'])
        .default('csr'),
    )
    .option(
      '-n, --devices <n>',
      `devices per round (default: ${BENCH_WORKS.map((w) => `${w} ${DEFAULT_BENCH_DEVICES[w]}`).join(', ')})`,
      intOption('--devices', 1, 10_000_000),
    )
    .addOption(new Option('--key-type <type>', 'device key type').choices([...KEY_TYPES]).default('P-256'))
    .addOption(
      new Option('--mode <mode>', 'PKCS#11 call style')
        .choices(['auto', 'sync', 'async', 'hybrid'])
        .default('auto'),
    )
    .option('--lanes <n>', 'identities in flight (= sessions)', intOption('--lanes', 1, 1024), 1)
    .option(
      '--processes <n>',
      'provline processes sharing the work, as HSM workers are deployed (default: one per core)',
      intOption('--processes', 1, 64),
      availableParallelism(),
    )
    .option('--rounds <n>', 'rounds; medians are reported', intOption('--rounds', 1, 100), 3)
    .option(
      '--latency-ms <ms>',
      'simulate a network HSM: delay per PKCS#11 call (skips the C baseline)',
      intOption('--latency-ms', 0, 10_000),
      0,
    )
    .option('--skip-raw', 'do not run the C baseline')
    .option('--json', 'print as JSON')
    .action(
      async (opts: {
        work: BenchWork | 'all';
        devices?: number;
        keyType: KeyType;
        mode: 'auto' | 'sync' | 'async' | 'hybrid';
        lanes: number;
        processes: number;
        rounds: number;
        latencyMs: number;
        skipRaw?: boolean;
        json?: boolean;
      }) => {
        const c = ctx();
        const { work, json, ...rest } = opts;
        const o = { ...rest, skipRaw: opts.skipRaw ?? false };
        const settings = await c.hsmSettings();
        if (work === 'all') {
          const all = await runHsmBenchAll(settings, o, c.env);
          if (json) return c.json(all);
          c.print(
            BENCH_WORKS.map((w) => `${w}\n${formatBench(all.works[w])}`).join('\n\n') +
              `\n\ngoal      ${all.goal} of the best raw shape for each work`,
          );
          return;
        }
        const r = await runHsmBench(
          settings,
          { ...o, work, devices: o.devices ?? DEFAULT_BENCH_DEVICES[work] },
          c.env,
        );
        if (json) return c.json(r);
        c.print(formatBench(r));
      },
    );
}

function formatBench(r: BenchResult): string {
  return [
    `provline  ${r.devicesPerSecond} devices/s  (${r.work}, ${r.keyType}, mode ${r.mode}, ${r.processes} process${r.processes === 1 ? '' : 'es'} × ${r.lanes} lane${r.lanes === 1 ? '' : 's'}${r.latencyMs ? `, +${r.latencyMs} ms/call` : ''}; median of ${r.rounds}: ${r.runs.join(', ')})`,
    r.raw
      ? `raw C     ${r.raw.devicesPerSecond} devices/s  (best shape: ${r.raw.shape === '2p' ? '2 processes' : `${r.raw.shape} thread${r.raw.shape === '1' ? '' : 's'}`})`
      : 'raw C     not run',
    r.ratio !== null ? `ratio     ${r.ratio}` : '',
  ]
    .filter(Boolean)
    .join('\n');
}

function thingNameFor(pattern: string, serial: string): string {
  const p = compilePattern(pattern, 'thingName');
  const others = p.names.filter((n) => n !== 'serial');
  if (others.length)
    throw usageError(
      `the profile's thingName "${pattern}" needs CSV columns (${others.join(', ')})`,
      'Pass --thing-name.',
    );
  return p.apply(() => serial);
}

function formatInfo(i: HsmInfo): string {
  const lines = [
    `module    ${i.module.path}  (${i.module.description} ${i.module.libraryVersion}, ${i.module.manufacturer}, Cryptoki ${i.module.cryptokiVersion})`,
    `token     "${i.token.label}"  ${i.tokenUri}  model ${i.token.model}  serial ${i.token.serial}  slot ${i.token.slotId}`,
    `sessions  pool ${i.sessions.pool} (hsm.sessions ${i.sessions.configured}, token limit ${i.sessions.tokenMaxRw ?? 'none stated'})`,
    'mechanisms',
  ];
  for (const m of i.mechanisms)
    lines.push(`  ${m.supported ? 'yes' : 'no '}  ${m.name.padEnd(26)} ${m.usedFor}`);
  return lines.join('\n');
}
