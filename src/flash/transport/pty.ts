/**
 * Pseudo-terminal pairs made by socat: a simulated serial line with a device end and a station
 * end. Used by `provline demo` (and the tests) to stand in for USB serial adapters. Each socat
 * runs in its own session (setsid), so signals to our process group leave it alone, and is
 * stopped by pid, never by name.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { stopPid, waitFor } from '../../core/index.js';

export interface PtyPair {
  /** The device end (where a simulator attaches). */
  device: string;
  /** The station end (where a driver's transport opens). */
  host: string;
  pid: number;
  stop(): Promise<void>;
}

export function spawnDetached(cmd: string, args: string[]): number {
  const child = spawn('setsid', [cmd, ...args], { stdio: 'ignore' });
  child.unref();
  if (!child.pid) throw new Error(`could not start ${cmd}`);
  return child.pid;
}

/** `socat pty,raw,echo=0,link=<dir>/<name>-dev pty,raw,echo=0,link=<dir>/<name>-host`. */
export async function startPtyPair(dir: string, name: string): Promise<PtyPair> {
  const device = join(dir, `${name}-dev`);
  const host = join(dir, `${name}-host`);
  const pid = spawnDetached('socat', [`pty,raw,echo=0,link=${device}`, `pty,raw,echo=0,link=${host}`]);
  await waitFor(`socat links for ${name}`, () => existsSync(device) && existsSync(host), 5_000, 10);
  return { device, host, pid, stop: () => stopPid(pid, 'socat', 2_000) };
}
