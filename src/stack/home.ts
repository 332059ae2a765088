/**
 * The layout of $PROVLINE_HOME, owned here and only here. Every service of the local stack
 * keeps its files in its own directory; `stack.json` records ports so URLs stay stable.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface StackPaths {
  home: string;
  stateFile: string;
  lockFile: string;
  redisDir: string;
  redisConf: string;
  redisPid: string;
  redisLog: string;
  hsmDir: string;
  softhsm2Conf: string;
  tokenDir: string;
  userPinFile: string;
  /** Written once the token is fully set up (user PIN included); read by the fast path. */
  tokenReadyFile: string;
  soPinFile: string;
  awsDir: string;
}

export function stackPaths(home: string): StackPaths {
  const redisDir = join(home, 'redis');
  const hsmDir = join(home, 'hsm');
  return {
    home,
    stateFile: join(home, 'stack.json'),
    lockFile: join(home, 'stack.lock'),
    redisDir,
    redisConf: join(redisDir, 'redis.conf'),
    redisPid: join(redisDir, 'redis.pid'),
    redisLog: join(redisDir, 'redis.log'),
    hsmDir,
    softhsm2Conf: join(hsmDir, 'softhsm2.conf'),
    tokenDir: join(hsmDir, 'tokens'),
    userPinFile: join(hsmDir, 'user.pin'),
    tokenReadyFile: join(hsmDir, 'token.ready'),
    soPinFile: join(hsmDir, 'so.pin'),
    awsDir: join(home, 'aws'),
  };
}

/** What `stack up` records; services read their ports from here. */
export interface StackState {
  redisPort?: number;
  aws?: { port?: number; s3Port?: number; [k: string]: unknown };
}

export function readState(paths: StackPaths): StackState {
  if (!existsSync(paths.stateFile)) return {};
  try {
    return JSON.parse(readFileSync(paths.stateFile, 'utf8')) as StackState;
  } catch {
    return {};
  }
}

export function writeState(paths: StackPaths, state: StackState): void {
  mkdirSync(paths.home, { recursive: true, mode: 0o700 });
  const tmp = `${paths.stateFile}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(state, null, 2)}\n`);
  renameSync(tmp, paths.stateFile);
}

export function readPid(file: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
