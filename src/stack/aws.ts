/**
 * The stack's local AWS IoT stand-in (emulator/): a detached `node dist/workers/emulator.js`
 * with its state, pid file, log and a standard AWS shared-credentials file under
 * `<home>/aws/`. The key pair is random, made at the first `stack up`, and kept (0600).
 *
 * Layout of <home>/aws/:
 *   credentials     [provline-local] aws_access_key_id / aws_secret_access_key
 *   config          [profile provline-local] region = <the stand-in's region>
 *   emulator.pid, ready.json, emulator.log
 *   state/          the stand-in's state directory (see emulator/server.ts); state/ca/root-ca.cert.pem
 *                   is the root devices trust for the MQTT endpoint (aws.rootCaFile)
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ProvlineError, packageRoot, freePort, isAlive, stopPid, waitFor } from '../core/index.js';
import { readPid, type StackPaths, type StackState } from './home.js';

export const AWS_PROFILE = 'provline-local';
export const AWS_BUCKET = 'provline-local';
/** The stand-in's region and account unless the stack is started as another (`StandInScope`). */
export const AWS_REGION = 'us-east-1';
export const AWS_ACCOUNT = '123456789012';
/** Any role ARN works with the stand-in; this is the one the stack advertises (in its account). */
const roleArnOf = (account: string): string => `arn:aws:iam::${account}:role/provline-local-registration`;
export const AWS_ROLE_ARN = roleArnOf(AWS_ACCOUNT);

/**
 * The account and region the stand-in runs as: its ARNs, the hosts DescribeEndpoint names and
 * the SigV4 scope it accepts follow them. Recorded in stack.json; kept across restarts.
 */
export interface StandInScope {
  region: string;
  account: string;
}

/** The scope recorded for the stack's stand-in (the defaults when none is). */
export function scopeOf(state: StackState): StandInScope {
  const region = typeof state.aws?.region === 'string' ? state.aws.region : AWS_REGION;
  const account = typeof state.aws?.account === 'string' ? state.aws.account : AWS_ACCOUNT;
  return { region, account };
}
const MARK = 'workers/emulator.js';

export interface AwsStatus {
  endpoint: string | null;
  s3Endpoint: string | null;
  /** `localhost:<port>` of the MQTT endpoint (mutual TLS), as DescribeEndpoint iot:Data-ATS returns it. */
  mqttEndpoint: string | null;
  /** The root CA that signs the MQTT server certificate (pass it as the device's CA file). */
  rootCaFile: string | null;
  region: string | null;
  /** The account id in the stand-in's ARNs. */
  account: string | null;
  credentialsFile: string | null;
  /** AWS_CONFIG_FILE for tools that want the region from a profile (the AWS CLI). */
  configFile: string | null;
  profile: string | null;
  bucket: string | null;
  roleArn: string | null;
  pid: number | null;
  running: boolean;
}

function files(paths: StackPaths): {
  credentials: string;
  config: string;
  pid: string;
  ready: string;
  log: string;
  state: string;
} {
  const d = paths.awsDir;
  return {
    credentials: join(d, 'credentials'),
    config: join(d, 'config'),
    pid: join(d, 'emulator.pid'),
    ready: join(d, 'ready.json'),
    log: join(d, 'emulator.log'),
    state: join(d, 'state'),
  };
}

export function awsStatus(paths: StackPaths, state: StackState): AwsStatus {
  const f = files(paths);
  const pid = readPid(f.pid);
  const running = isAlive(pid, MARK);
  const port = state.aws?.port;
  const s3Port = state.aws?.s3Port;
  const mqttPort = typeof state.aws?.mqttPort === 'number' ? state.aws.mqttPort : undefined;
  if (!port || !s3Port) {
    return {
      endpoint: null,
      s3Endpoint: null,
      mqttEndpoint: null,
      rootCaFile: null,
      region: null,
      account: null,
      credentialsFile: null,
      configFile: null,
      profile: null,
      bucket: null,
      roleArn: null,
      pid: null,
      running: false,
    };
  }
  const scope = scopeOf(state);
  return {
    endpoint: `http://127.0.0.1:${port}`,
    s3Endpoint: `http://127.0.0.1:${s3Port}`,
    mqttEndpoint: mqttPort ? `localhost:${mqttPort}` : null,
    rootCaFile: mqttPort ? join(f.state, 'ca', 'root-ca.cert.pem') : null,
    region: scope.region,
    account: scope.account,
    credentialsFile: f.credentials,
    configFile: f.config,
    profile: AWS_PROFILE,
    bucket: AWS_BUCKET,
    roleArn: roleArnOf(scope.account),
    pid: running ? pid! : null,
    running,
  };
}

/** Random credentials in AWS's shapes (20-char key id starting AKIA, 40-char secret). */
function newCredentialsFile(file: string): void {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const id = `AKIA${[...randomBytes(16)].map((b) => alphabet[b % 32]).join('')}`;
  const secret = randomBytes(30).toString('base64');
  writeFileSync(
    file,
    `# Written by \`provline stack up\` for the local AWS IoT stand-in; not valid against AWS.\n[${AWS_PROFILE}]\naws_access_key_id = ${id}\naws_secret_access_key = ${secret}\n`,
    { mode: 0o600 },
  );
}

/**
 * Starts the stand-in (or keeps it running); returns what to record in stack.json. `as`: the
 * account and region to run as (default: the recorded ones, else AWS_ACCOUNT in AWS_REGION); a
 * running stand-in of another scope is refused rather than silently kept.
 */
export async function awsUp(
  paths: StackPaths,
  state: StackState,
  as?: Partial<StandInScope>,
): Promise<StackState['aws']> {
  const f = files(paths);
  const recorded = scopeOf(state);
  const scope: StandInScope = {
    region: as?.region ?? recorded.region,
    account: as?.account ?? recorded.account,
  };
  mkdirSync(paths.awsDir, { recursive: true, mode: 0o700 });
  if (!existsSync(f.credentials)) newCredentialsFile(f.credentials);
  const current = awsStatus(paths, state);
  if (current.running && state.aws) {
    if (scope.region === recorded.region && scope.account === recorded.account) return state.aws;
    throw new ProvlineError(
      'STACK_AWS_FAILED',
      `the AWS IoT stand-in runs as account ${recorded.account} in ${recorded.region}, not ${scope.account} in ${scope.region}`,
      { hint: 'Stop the stack (`provline stack down`) and start it again as the other account.' },
    );
  }
  writeFileSync(f.config, `[profile ${AWS_PROFILE}]\nregion = ${scope.region}\n`, { mode: 0o600 });
  const port = await freePort(state.aws?.port);
  let s3Port = await freePort(state.aws?.s3Port);
  if (s3Port === port) s3Port = await freePort();
  let mqttPort = await freePort(typeof state.aws?.mqttPort === 'number' ? state.aws.mqttPort : undefined);
  while (mqttPort === port || mqttPort === s3Port) mqttPort = await freePort();
  rmSync(f.ready, { force: true });
  const script = join(packageRoot(), 'dist', 'workers', 'emulator.js');
  if (!existsSync(script)) {
    throw new ProvlineError('STACK_AWS_FAILED', `the AWS IoT stand-in is not built (${script} is missing)`, {
      hint: 'Run `bash scripts/bootstrap.sh` (or `npm run build`).',
    });
  }
  const log = openSync(f.log, 'a', 0o600);
  const args = [
    script,
    '--state-dir',
    f.state,
    '--port',
    String(port),
    '--s3-port',
    String(s3Port),
    '--mqtt-port',
    String(mqttPort),
    '--region',
    scope.region,
    '--account',
    scope.account,
  ];
  args.push(
    '--credentials-file',
    f.credentials,
    '--profile',
    AWS_PROFILE,
    '--pid-file',
    f.pid,
    '--ready-file',
    f.ready,
    '--bucket',
    AWS_BUCKET,
  );
  const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', log, log] });
  closeSync(log);
  let exited: number | null = null;
  child.once('exit', (code) => (exited = code ?? 1));
  child.unref();
  try {
    await waitFor(
      'the AWS IoT stand-in to be ready',
      () => {
        if (exited !== null) throw new Error(`it exited with code ${exited}`);
        return existsSync(f.ready);
      },
      20_000,
    );
  } catch (e) {
    throw new ProvlineError('STACK_AWS_FAILED', 'the AWS IoT stand-in did not start', {
      cause: e,
      hint: `See ${f.log}.`,
      details: { log: tail(f.log) },
    });
  }
  return { ...state.aws, port, s3Port, mqttPort, region: scope.region, account: scope.account };
}

export async function awsDown(paths: StackPaths): Promise<void> {
  const f = files(paths);
  const pid = readPid(f.pid);
  if (pid) await stopPid(pid, MARK, 15_000);
  rmSync(f.pid, { force: true });
  rmSync(f.ready, { force: true });
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-20).join('\n');
  } catch {
    return '';
  }
}
