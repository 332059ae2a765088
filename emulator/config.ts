/**
 * Start-up settings of the stand-in process, and the AWS shared-credentials file format
 * (read here, written by src/stack/aws.ts). Pure parsing; main.ts does the I/O.
 */
import type { FaultsInput } from './faults.js';
import { LambdaConfigError, parseLambdaOption, type LambdaTarget } from './mqtt/hooks.js';
import type { Credentials } from './sigv4.js';

/** Parses an AWS shared-credentials/config INI text into sections of key → value. */
export function parseIni(text: string): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  let section: Record<string, string> | undefined;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const head = /^\[\s*(.+?)\s*\]$/.exec(line);
    if (head) {
      section = out[head[1]!] ??= {};
      continue;
    }
    const eq = line.indexOf('=');
    if (section && eq > 0) section[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return out;
}

/** The key pair of `profile` in a shared-credentials file's text. */
export function credentialsFromIni(text: string, profile: string): Credentials | undefined {
  const s = parseIni(text)[profile];
  if (!s?.aws_access_key_id || !s.aws_secret_access_key) return undefined;
  return { accessKeyId: s.aws_access_key_id, secretAccessKey: s.aws_secret_access_key };
}

export function credentialsIni(profile: string, c: Credentials): string {
  return `# Written by provline for the local AWS IoT stand-in; not valid against AWS.\n[${profile}]\naws_access_key_id = ${c.accessKeyId}\naws_secret_access_key = ${c.secretAccessKey}\n`;
}

export interface MainArgs {
  stateDir: string;
  host: string;
  port: number;
  s3Port: number;
  mqttPort: number;
  region: string;
  account: string;
  credentialsFile: string | undefined;
  profile: string;
  faults: string | undefined;
  seed: number | undefined;
  linesPerSecond: number | undefined;
  fsync: 'always' | 'interval' | 'never';
  readyFile: string | undefined;
  pidFile: string | undefined;
  buckets: string[];
  /** `--lambda <function arn>=<url>`: pre-provisioning hook endpoints. */
  lambdas: Array<[arn: string, target: LambdaTarget]>;
}

const USAGE = `usage: node dist/workers/emulator.js --state-dir DIR [--port N] [--s3-port N] [--mqtt-port N] [--host H]
  [--region R] [--account 12DIGITS] [--credentials-file F --profile P] [--faults JSON|@FILE]
  [--seed N] [--lines-per-second N] [--fsync always|interval|never] [--ready-file F]
  [--pid-file F] [--bucket NAME]... [--lambda FUNCTION_ARN=URL]...
Credentials come from --credentials-file/--profile, else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY.`;

export class ArgsError extends Error {}

export function parseArgs(argv: string[]): MainArgs {
  const a: MainArgs = {
    stateDir: '',
    host: '127.0.0.1',
    port: 0,
    s3Port: 0,
    mqttPort: 0,
    region: 'us-east-1',
    account: '123456789012',
    credentialsFile: undefined,
    profile: 'default',
    faults: undefined,
    seed: undefined,
    linesPerSecond: undefined,
    fsync: 'interval',
    readyFile: undefined,
    pidFile: undefined,
    buckets: [],
    lambdas: [],
  };
  const int = (flag: string, v: string | undefined, min = 0, max = 65535): number => {
    const n = Number(v);
    if (v === undefined || !/^\d+$/.test(v) || n < min || n > max)
      throw new ArgsError(`${flag} takes a number from ${min} to ${max}\n${USAGE}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const v = argv[i + 1];
    const take = (): string => {
      if (v === undefined) throw new ArgsError(`${flag} needs a value\n${USAGE}`);
      i++;
      return v;
    };
    switch (flag) {
      case '--state-dir':
        a.stateDir = take();
        break;
      case '--host':
        a.host = take();
        break;
      case '--port':
        a.port = int(flag, take());
        break;
      case '--s3-port':
        a.s3Port = int(flag, take());
        break;
      case '--mqtt-port':
        a.mqttPort = int(flag, take());
        break;
      case '--region':
        a.region = take();
        break;
      case '--account':
        a.account = take();
        if (!/^\d{12}$/.test(a.account)) throw new ArgsError('--account takes 12 digits');
        break;
      case '--credentials-file':
        a.credentialsFile = take();
        break;
      case '--profile':
        a.profile = take();
        break;
      case '--faults':
        a.faults = take();
        break;
      case '--seed':
        a.seed = int(flag, take(), 0, 2 ** 31 - 1);
        break;
      case '--lines-per-second':
        a.linesPerSecond = int(flag, take(), 1, 1_000_000);
        break;
      case '--fsync': {
        const f = take();
        if (f !== 'always' && f !== 'interval' && f !== 'never')
          throw new ArgsError('--fsync takes always, interval or never');
        a.fsync = f;
        break;
      }
      case '--ready-file':
        a.readyFile = take();
        break;
      case '--pid-file':
        a.pidFile = take();
        break;
      case '--bucket':
        a.buckets.push(take());
        break;
      case '--lambda':
        try {
          a.lambdas.push(parseLambdaOption(take()));
        } catch (e) {
          if (e instanceof LambdaConfigError) throw new ArgsError(e.message);
          throw e;
        }
        break;
      case '-h':
      case '--help':
        throw new ArgsError(USAGE);
      default:
        throw new ArgsError(`unknown option ${flag}\n${USAGE}`);
    }
  }
  if (!a.stateDir) throw new ArgsError(`--state-dir is required\n${USAGE}`);
  return a;
}

/** Start-up faults: the --faults JSON (already read), then --seed/--lines-per-second on top. */
export function startFaults(
  json: string | undefined,
  seed: number | undefined,
  linesPerSecond: number | undefined,
): FaultsInput {
  const base = json ? (JSON.parse(json) as FaultsInput) : {};
  return {
    ...base,
    ...(seed === undefined ? {} : { seed }),
    ...(linesPerSecond === undefined ? {} : { linesPerSecond }),
  };
}
