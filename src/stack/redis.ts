/**
 * The stack's private redis-server: loopback only, a port of its own, AOF on, data in the
 * home. Started and stopped by its pid file; never touches any other Redis on the machine.
 *
 * Durability: `appendonly yes` with `appendfsync everysec`. A crash of provline or of Redis
 * loses nothing; a power cut can lose at most the last second of journal writes. The pipeline
 * is built so that a lost transition is redone, never duplicated (docs/architecture.md).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { ProvlineError, freePort, isAlive, stopPid, waitFor } from '../core/index.js';
import { readPid, type StackPaths } from './home.js';

export interface RedisStatus {
  url: string | null;
  pid: number | null;
  running: boolean;
}

export function redisStatus(paths: StackPaths, port: number | undefined): RedisStatus {
  const pid = readPid(paths.redisPid);
  const running = isAlive(pid, 'redis-server');
  return { url: port ? `redis://127.0.0.1:${port}` : null, pid: running ? pid! : null, running };
}

export async function redisUp(paths: StackPaths, preferredPort: number | undefined): Promise<number> {
  const current = redisStatus(paths, preferredPort);
  if (current.running && preferredPort) return preferredPort;
  mkdirSync(paths.redisDir, { recursive: true, mode: 0o700 });
  const port = await freePort(preferredPort);
  rmSync(paths.redisPid, { force: true });
  writeFileSync(
    paths.redisConf,
    [
      '# Written by `provline stack up`; regenerated on every start.',
      `port ${port}`,
      'bind 127.0.0.1',
      'protected-mode yes',
      `dir ${paths.redisDir}`,
      'daemonize yes',
      `pidfile ${paths.redisPid}`,
      `logfile ${paths.redisLog}`,
      'appendonly yes',
      'appendfsync everysec',
      'save ""',
      // BullMQ requires that Redis never evicts keys.
      'maxmemory-policy noeviction',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  await new Promise<void>((resolve, reject) => {
    const child = spawn('redis-server', [paths.redisConf], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('error', (e) =>
      reject(
        new ProvlineError('STACK_REDIS_MISSING', 'redis-server could not be started', {
          cause: e,
          hint: 'Install it: apt-get install redis-server (npm test and npm run demo do this for you).',
        }),
      ),
    );
    child.once('exit', (code) =>
      code === 0
        ? resolve()
        : reject(new ProvlineError('STACK_REDIS_FAILED', `redis-server exited with ${code}: ${err.trim()}`)),
    );
  });
  try {
    await waitFor('redis to answer PING', () => ping(port), 15_000);
  } catch (e) {
    throw new ProvlineError('STACK_REDIS_FAILED', `redis-server did not come up on port ${port}`, {
      cause: e,
      hint: `See ${paths.redisLog}.`,
    });
  }
  return port;
}

export async function redisDown(paths: StackPaths): Promise<void> {
  const pid = readPid(paths.redisPid);
  if (pid) await stopPid(pid, 'redis-server', 20_000);
  rmSync(paths.redisPid, { force: true });
}

/** PING over a raw socket (no client library needed to know the server is up). */
export function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ port, host: '127.0.0.1' });
    const done = (ok: boolean): void => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1000, () => done(false));
    sock.once('error', () => done(false));
    sock.once('connect', () => sock.write('PING\r\n'));
    sock.once('data', (d) => done(d.toString().startsWith('+PONG')));
  });
}
