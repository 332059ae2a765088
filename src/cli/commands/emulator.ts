/**
 * `provline emulator`: run the local AWS IoT stand-in in the foreground (its process entry
 * point, workers/emulator.ts, as a child that stops with this process);
 * `provline emulator faults`: read or change its faults and pacing at run time;
 * `provline emulator events`: the data plane's reasons log (why a connect, subscribe or
 * publish was refused, what JITR/JITP/fleet provisioning did), once or `--follow`ed;
 * `provline emulator clock`: skew the stand-in's clock (token and certificate expiry tests).
 * All talk to the `/_emulator/*` admin endpoints.
 */
import type { Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ProvlineError, usageError, packageRoot, startWorkerProcess } from '../../core/index.js';
import { AWS_PROFILE, awsStatus, readState, stackPaths } from '../../stack/index.js';
import type { CommandContext } from '../context.js';
import { intOption } from '../options.js';

interface RunOptions {
  port: number;
  s3Port: number;
  mqttPort: number;
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

/** The stand-in's faults and pacing (see docs/emulator.md); the stand-in checks the fields. */
type FaultsInput = Record<string, unknown>;

function readJsonOption(value: string, what: string): FaultsInput {
  const text = value.startsWith('@') ? readFileSync(value.slice(1), 'utf8') : value;
  try {
    return JSON.parse(text) as FaultsInput;
  } catch (e) {
    throw usageError(`${what} is not valid JSON: ${(e as Error).message}`);
  }
}

/** Whether a shared-credentials file has a section for `profile` with a key pair. */
function hasKeyPair(text: string, profile: string): boolean {
  const section = text.split(/^\s*\[/m).find((s) => s.startsWith(`${profile}]`));
  return (
    !!section &&
    /^\s*aws_access_key_id\s*=\s*\S/m.test(section) &&
    /^\s*aws_secret_access_key\s*=\s*\S/m.test(section)
  );
}

/** How long the stand-in may take to listen, on a busy machine. */
const STAND_IN_READY_MS = 30_000;

export function registerEmulator(program: Command, ctx: () => CommandContext): void {
  const emulator = program
    .command('emulator')
    .description('Run the local AWS IoT stand-in (control plane, bulk registration, S3) in the foreground')
    .option('--port <n>', 'IoT control-plane port (0 = any free port)', intOption('--port', 0, 65535), 0)
    .option('--s3-port <n>', 'S3 port (0 = any free port)', intOption('--s3-port', 0, 65535), 0)
    .option(
      '--mqtt-port <n>',
      'MQTT (mutual TLS) port (0 = any free port)',
      intOption('--mqtt-port', 0, 65535),
      0,
    )
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
      const profile = opts.profile ?? AWS_PROFILE;
      // The key pair goes to the stand-in as a file or in its environment, never in argv.
      const fromFile = existsSync(file) && hasKeyPair(readFileSync(file, 'utf8'), profile);
      if (!fromFile && !(c.env.AWS_ACCESS_KEY_ID && c.env.AWS_SECRET_ACCESS_KEY)) {
        throw usageError(
          'no credentials for the stand-in',
          "Pass --credentials-file/--profile, set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run `provline stack up` once to create the stack's credentials file.",
        );
      }
      if (opts.faults) readJsonOption(opts.faults, '--faults');
      const args = [
        '--state-dir',
        opts.stateDir ?? join(home, 'emulator'),
        '--host',
        opts.host,
        '--port',
        String(opts.port),
        '--s3-port',
        String(opts.s3Port),
        '--mqtt-port',
        String(opts.mqttPort),
        '--region',
        opts.region,
        '--fsync',
        opts.fsync,
        ...(fromFile ? ['--credentials-file', file, '--profile', profile] : []),
        ...(opts.faults ? ['--faults', opts.faults] : []),
        ...(opts.seed === undefined ? [] : ['--seed', String(opts.seed)]),
        ...(opts.linesPerSecond === undefined ? [] : ['--lines-per-second', String(opts.linesPerSecond)]),
        ...opts.bucket.flatMap((b) => ['--bucket', b]),
      ];
      const standIn = await startWorkerProcess({
        what: 'the AWS IoT stand-in',
        script: join(packageRoot(), 'dist', 'workers', 'emulator.js'),
        args,
        env: c.env,
        readyMs: STAND_IN_READY_MS,
        code: 'STACK_AWS_FAILED',
      });
      const emu = JSON.parse(standIn.ready) as {
        iotUrl: string;
        s3Url: string;
        mqttEndpoint: string;
        rootCaFile: string;
        region: string;
      };
      const forward = (sig: NodeJS.Signals): void => void standIn.child.kill(sig);
      process.on('SIGINT', forward);
      process.on('SIGTERM', forward);
      try {
        c.print(
          `AWS IoT stand-in: IoT ${emu.iotUrl}  S3 ${emu.s3Url}  MQTT ${emu.mqttEndpoint} (root CA ${emu.rootCaFile})  region ${emu.region}  (Ctrl-C to stop)`,
        );

        const end = await standIn.exited;
        if (end.code !== 0)
          throw new ProvlineError(
            'STACK_AWS_FAILED',
            `the AWS IoT stand-in ended with ${end.signal ?? `exit code ${end.code}`}`,
            { hint: 'Its last words are above (stderr).' },
          );
      } finally {
        process.off('SIGINT', forward);
        process.off('SIGTERM', forward);
      }
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
      const endpoint = standInEndpoint(c, opts.endpoint);
      const body = opts.clear ? {} : opts.set ? readJsonOption(opts.set, '--set') : undefined;
      c.json(
        await admin(
          endpoint,
          `/_emulator/faults${opts.clear || opts.replace ? '?replace=true' : ''}`,
          body === undefined
            ? undefined
            : { method: 'PUT', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } },
        ),
      );
    });

  emulator
    .command('events')
    .description(
      "The stand-in's data-plane reasons log: refused connects, subscribes, publishes; JITR/JITP/fleet steps",
    )
    .option('--follow', 'keep printing new events until Ctrl-C')
    .option('--json', 'one JSON object per event (NDJSON)')
    .option('--client-id <id>', 'only events of this MQTT client id')
    .option('--since <seq>', 'only events after this sequence number', intOption('--since', 0))
    .option('--endpoint <url>', "the stand-in's IoT endpoint (default: the local stack's)")
    .action(
      async (opts: {
        follow?: boolean;
        json?: boolean;
        clientId?: string;
        since?: number;
        endpoint?: string;
      }) => {
        const c = ctx();
        const endpoint = standInEndpoint(c, opts.endpoint);
        const stop = new AbortController();
        const onSignal = (): void => stop.abort();
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        try {
          let since = opts.since ?? 0;
          for (;;) {
            const params = new URLSearchParams({ since: String(since) });
            if (opts.clientId !== undefined) params.set('clientId', opts.clientId);
            const page = (await admin(endpoint, `/_emulator/events?${params.toString()}`)) as {
              events: EventLine[];
              next: number;
            };
            for (const e of page.events) c.print(opts.json ? JSON.stringify(e) : eventLine(e));
            since = page.next;
            if (!opts.follow) break;
            if (!page.events.length) {
              await new Promise<void>((resolve) => {
                const t = setTimeout(resolve, 500);
                stop.signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
              });
            }
            if (stop.signal.aborted) break;
          }
        } finally {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        }
      },
    );

  emulator
    .command('clock')
    .description("Show or skew the stand-in's clock (certificate, claim and token expiry)")
    .option('--offset <seconds>', 'set the skew in seconds (0 = real time; negative goes back)')
    .option('--endpoint <url>', "the stand-in's IoT endpoint (default: the local stack's)")
    .action(async (opts: { offset?: string; endpoint?: string }) => {
      const c = ctx();
      const endpoint = standInEndpoint(c, opts.endpoint);
      if (opts.offset !== undefined && !/^-?\d+(\.\d+)?$/.test(opts.offset))
        throw usageError(`--offset takes a number of seconds, got "${opts.offset}"`);
      c.json(
        await admin(
          endpoint,
          '/_emulator/clock',
          opts.offset === undefined
            ? undefined
            : { method: 'POST', body: JSON.stringify({ offsetSeconds: Number(opts.offset) }) },
        ),
      );
    });
}

interface EventLine {
  seq: number;
  time: number;
  kind: string;
  clientId?: string;
  certificateId?: string;
  topic?: string;
  reason: string;
}

/** `12:00:01.234  connect.refused  client-1  cert 1a2b3c4d…  reason` */
function eventLine(e: EventLine): string {
  const t = new Date(e.time).toISOString().slice(11, 23);
  const who = [
    e.clientId ?? '-',
    e.certificateId ? `cert ${e.certificateId.slice(0, 12)}…` : '',
    e.topic ? `topic ${e.topic}` : '',
  ]
    .filter(Boolean)
    .join('  ');
  return `${t}  #${e.seq}  ${e.kind.padEnd(17)} ${who}\n    ${e.reason}`;
}

function standInEndpoint(c: CommandContext, given: string | undefined): string {
  const paths = stackPaths(c.loaded.home);
  const endpoint = given ?? awsStatus(paths, readState(paths)).endpoint;
  if (!endpoint)
    throw new ProvlineError('EMULATOR_UNREACHABLE', 'no AWS IoT stand-in to talk to', {
      hint: 'Run `provline stack up`, or pass --endpoint.',
    });
  return endpoint.replace(/\/$/, '');
}

/** One admin call; JSON out, ProvlineError when unreachable or refused. */
async function admin(endpoint: string, path: string, init?: RequestInit): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(`${endpoint}${path}`, init);
  } catch (e) {
    throw new ProvlineError('EMULATOR_UNREACHABLE', `the AWS IoT stand-in at ${endpoint} does not answer`, {
      cause: e,
      retryable: true,
      hint: 'Is it running? See `provline stack status`.',
    });
  }
  const text = await res.text();
  if (!res.ok)
    throw new ProvlineError('EMULATOR_FAULTS_REJECTED', `the stand-in refused ${path}: ${text}`, {
      kind: 'invalid-input',
    });
  return JSON.parse(text) as unknown;
}
