/**
 * Real serial links for tests: socat pty pairs and ser2net bridges in front of them. Each is
 * started in its own session (setsid) so killing a test's process group leaves it alone, and is
 * stopped by pid in cleanup, never by name.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { freePort, stopPid, waitFor } from '../../src/core/proc.js';
import { spawnDetached } from '../../src/flash/index.js';

export { startPtyPair, type PtyPair } from '../../src/flash/index.js';

export interface Ser2net {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

/** ser2net raw TCP accepter in front of `tty` (chardelay off, see stack-notes.md §7). */
export async function startSer2net(dir: string, name: string, tty: string): Promise<Ser2net> {
  const port = await freePort();
  const yaml = join(dir, `${name}-ser2net.yaml`);
  const pidFile = join(dir, `${name}-ser2net.pid`);
  writeFileSync(
    yaml,
    [
      '%YAML 1.1',
      '---',
      `connection: &${name.replace(/[^A-Za-z0-9]/g, '')}`,
      `  accepter: tcp,127.0.0.1,${port}`,
      `  connector: serialdev,${tty},115200n81,local`,
      '  options:',
      '    kickolduser: true',
      '    chardelay: false',
      '',
    ].join('\n'),
  );
  const launched = spawnDetached('ser2net', ['-n', '-u', '-c', yaml, '-P', pidFile]);
  await waitFor(
    `ser2net on ${port}`,
    () =>
      new Promise<boolean>((resolve) => {
        const s = connect({ host: '127.0.0.1', port }, () => {
          s.destroy();
          resolve(true);
        });
        s.once('error', () => resolve(false));
      }),
    20_000,
    25,
  );
  const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) || launched : launched;
  // A client that connects while ser2net still holds the probe's connection takes over from it
  // (kickolduser), so no pause is needed here.
  return { url: `tcp://127.0.0.1:${port}`, pid, stop: () => stopPid(pid, 'ser2net', 2_000) };
}
