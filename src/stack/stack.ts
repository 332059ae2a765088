/**
 * `provline stack up | down | status`: the embedded defaults (Redis, SoftHSM token, AWS IoT
 * stand-in) under one home directory. `up` is idempotent; `down` stops every process `up`
 * started and leaves the data in place.
 */
import { existsSync, linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { ProvlineError, isAlive, waitFor } from '../core/index.js';
import { awsDown, awsStatus, awsUp, type AwsStatus, type StandInScope } from './aws.js';
import { readState, stackPaths, writeState, type StackPaths } from './home.js';
import { redisDown, redisStatus, redisUp, type RedisStatus } from './redis.js';
import { hsmStatus, hsmUp, tokenOnDisk } from './softhsm.js';

export interface StackStatus {
  home: string;
  redis: RedisStatus;
  hsm: { module: string; softhsm2Conf: string; token: string; pinFile: string; initialized: boolean };
  aws: AwsStatus;
}

export function stackStatus(home: string): StackStatus {
  const paths = stackPaths(home);
  const state = readState(paths);
  return {
    home,
    redis: redisStatus(paths, state.redisPort),
    hsm: hsmStatus(paths),
    aws: awsStatus(paths, state),
  };
}

/** `as`: the account and region the stand-in runs as (default: as recorded, else the stack's own). */
export async function stackUp(home: string, as?: Partial<StandInScope>): Promise<StackStatus> {
  const paths = stackPaths(home);
  return withLock(paths, async () => {
    const state = readState(paths);
    hsmUp(paths);
    state.redisPort = await redisUp(paths, state.redisPort);
    writeState(paths, state);
    state.aws = await awsUp(paths, state, as);
    writeState(paths, state);
    return stackStatus(home);
  });
}

export async function stackDown(home: string): Promise<StackStatus> {
  const paths = stackPaths(home);
  if (!existsSync(home)) return stackStatus(home);
  return withLock(paths, async () => {
    await awsDown(paths);
    await redisDown(paths);
    return stackStatus(home);
  });
}

/**
 * Makes sure the local SoftHSM token exists, for commands that use it without `stack up`.
 * Cheap when it exists; otherwise set up under the same lock as `stack up`.
 */
export async function ensureLocalToken(home: string): Promise<void> {
  const paths = stackPaths(home);
  if (existsSync(paths.tokenReadyFile) && tokenOnDisk(paths)) return;
  await withLock(paths, () => {
    hsmUp(paths);
    return Promise.resolve();
  });
}

/** One `stack up`/`down` at a time per home (a stale lock of a dead process is taken over). */
async function withLock<T>(paths: StackPaths, fn: () => Promise<T>): Promise<T> {
  mkdirSync(paths.home, { recursive: true, mode: 0o700 });
  await waitFor(
    `the stack lock ${paths.lockFile}`,
    () => {
      // The lock file appears with its owner's pid already in it (written aside, then
      // hard-linked into place, which fails if the lock exists): nobody ever reads an empty
      // lock and mistakes it for a stale one.
      const mine = `${paths.lockFile}.${process.pid}`;
      writeFileSync(mine, String(process.pid), { mode: 0o600 });
      try {
        linkSync(mine, paths.lockFile);
        return true;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        // A lock whose owner died (killed during `stack up`) is taken over.
        const owner = Number(readFileSync(paths.lockFile, 'utf8'));
        if (owner > 0 && !isAlive(owner)) rmSync(paths.lockFile, { force: true });
        return false;
      } finally {
        rmSync(mine, { force: true });
      }
    },
    60_000,
    50,
  ).catch((e: unknown) => {
    throw new ProvlineError('STACK_LOCKED', `another provline is changing the stack in ${paths.home}`, {
      cause: e,
      retryable: true,
    });
  });
  try {
    return await fn();
  } finally {
    rmSync(paths.lockFile, { force: true });
  }
}
