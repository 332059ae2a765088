/**
 * `provline emulator`: run the local AWS IoT stand-in in the foreground, and
 * `provline emulator faults`: read or change its faults and pacing at run time (through its
 * `/_emulator/faults` admin endpoint).
 */
import type { Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { credentialsFromIni } from '../../../emulator/config.js';
import type { FaultsInput } from '../../../emulator/faults.js';
import { startEmulator } from '../../../emulator/server.js';
import { ProvlineError, usageError } from '../../core/errors.js';
import { AWS_PROFILE, awsStatus } from '../../stack/aws.js';
import { readState, stackPaths } from '../../stack/home.js';
import type { CommandContext } from '../context.js';
import { intOption } from '../options.js';

interface RunOptions {
  port: number;
  s3Port: number;
  host: string;
  stateDir?: string;
  region: string;
  credentialsFile?: string;
  profile?: string;
  faults?: string;
  seed?: number;
  linesPerSecond?: number;
  fsync: 'always' | 'interval' | 'never';
  bucket: string[];
}

function readJsonOption(value: string, what: string): FaultsInput {
  const text = value.startsWith('@') ? readFileSync(value.slice(1), 'utf8') : value;
  try {
    return JSON.parse(text) as FaultsInput;
  } catch (e) {
    throw usageError(`${what} is not valid JSON: ${(e as Error).message}`);
  }
}

export function registerEmulator(program: Command, ctx: () => CommandContext): void {
  const emulator = program
    .command('emulator')
    .description('Run the local AWS IoT stand-in (control plane, bulk registration, S3) in the foreground')
    .option('--port <n>', 'IoT control-plane port (0 = any free port)', intOption('--port', 0, 65535), 0)
    .option('--s3-port <n>', 'S3 port (0 = any free port)', intOption('--s3-port', 0, 65535), 0)
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--state-dir <dir>', 'state directory (default <home>/emulator)')
    .option('--region <region>', 'region used in ARNs and endpoints', 'us-east-1')
    .option(
      '--credentials-file <file>',
      "shared-credentials file holding the accepted key pair (default: the stack's, else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
    )
    .option('--profile <name>', `profile in the credentials file (default ${AWS_PROFILE})`)
    .option('--faults <json|@file>', 'start-up faults, see docs/emulator.md')
    .option('--seed <n>', 'seed for fault decisions', intOption('--seed', 0))
    .option('--lines-per-second <n>', 'pace bulk registration', intOption('--lines-per-second', 1))
    .option('--fsync <policy>', 'always | interval | never', 'interval')
    .option(
      '--bucket <name>',
      'create this bucket at start (repeatable)',
      (v: string, prev: string[]) => [...prev, v],
      [] as string[],
    )
    .action(async (opts: RunOptions) => {
      const c = ctx();
      if (!['always', 'interval', 'never'].includes(opts.fsync))
        throw usageError(`--fsync takes always, interval or never, got "${opts.fsync}"`);
      const home = c.loaded.home;
      const file = opts.credentialsFile ?? join(stackPaths(home).awsDir, 'credentials');
      let credentials = existsSync(file)
        ? credentialsFromIni(readFileSync(file, 'utf8'), opts.profile ?? AWS_PROFILE)
        : undefined;
      if (!credentials && c.env.AWS_ACCESS_KEY_ID && c.env.AWS_SECRET_ACCESS_KEY)
        credentials = { accessKeyId: c.env.AWS_ACCESS_KEY_ID, secretAccessKey: c.env.AWS_SECRET_ACCESS_KEY };
      if (!credentials) {
        throw usageError(
          'no credentials for the stand-in',
          "Pass --credentials-file/--profile, set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run `provline stack up` once to create the stack's credentials file.",
        );
      }
      const faults: FaultsInput = {
        ...(opts.faults ? readJsonOption(opts.faults, '--faults') : {}),
        ...(opts.seed === undefined ? {} : { seed: opts.seed }),
        ...(opts.linesPerSecond === undefined ? {} : { linesPerSecond: opts.linesPerSecond }),
      };
      const emu = await startEmulator({
        stateDir: opts.stateDir ?? join(home, 'emulator'),
        host: opts.host,
        port: opts.port,
        s3Port: opts.s3Port,
        region: opts.region,
        credentials: [credentials],
        fsync: opts.fsync,
        faults,
        buckets: opts.bucket,
      });
      c.print(`AWS IoT stand-in: IoT ${emu.iotUrl}  S3 ${emu.s3Url}  region ${emu.region}  (Ctrl-C to stop)`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await emu.close();
    });

  emulator
    .command('faults')
    .description("Show or change the running stand-in's faults and pacing")
    .option('--set <json|@file>', 'merge these settings into the current faults')
    .option('--replace', 'with --set: replace the faults instead of merging')
    .option('--clear', 'remove every fault and pacing setting')
    .option('--endpoint <url>', "the stand-in's IoT endpoint (default: the local stack's)")
    .action(async (opts: { set?: string; replace?: boolean; clear?: boolean; endpoint?: string }) => {
      const c = ctx();
      const paths = stackPaths(c.loaded.home);
      const endpoint = opts.endpoint ?? awsStatus(paths, readState(paths)).endpoint;
      if (!endpoint)
        throw new ProvlineError('EMULATOR_UNREACHABLE', 'no AWS IoT stand-in to talk to', {
          hint: 'Run `provline stack up`, or pass --endpoint.',
        });
      const body = opts.clear ? {} : opts.set ? readJsonOption(opts.set, '--set') : undefined;
      const url = `${endpoint.replace(/\/$/, '')}/_emulator/faults${opts.clear || opts.replace ? '?replace=true' : ''}`;
      let res: Response;
      try {
        res = await fetch(
          url,
          body === undefined
            ? {}
            : { method: 'PUT', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } },
        );
      } catch (e) {
        throw new ProvlineError(
          'EMULATOR_UNREACHABLE',
          `the AWS IoT stand-in at ${endpoint} does not answer`,
          { cause: e, retryable: true, hint: 'Is it running? See `provline stack status`.' },
        );
      }
      const text = await res.text();
      if (!res.ok)
        throw new ProvlineError('EMULATOR_FAULTS_REJECTED', `the stand-in refused the faults: ${text}`, {
          kind: 'invalid-input',
        });
      c.json(JSON.parse(text));
    });
}
