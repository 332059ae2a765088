/**
 * One process of a multi-process `hsm bench` run (forked by src/hsm/bench.ts; settings and options
 * arrive over IPC, never argv, and carry no PIN). Opens and warms up, reports ready, runs on
 * "go", reports its measured span.
 */
import { messageOf } from '../src/core/index.js';
import {
  openBenchLoop,
  type BenchChildMessage,
  type BenchLoop,
  type BenchOptions,
} from '../src/hsm/index.js';
import type { HsmSettings } from '../src/config/index.js';

type ParentMessage =
  { type: 'open'; settings: HsmSettings; options: BenchOptions } | { type: 'go'; devices: number };

let loop: BenchLoop | undefined;
const send = (m: BenchChildMessage): void => {
  process.send?.(m);
};

process.on('message', (m: ParentMessage) => {
  void (async () => {
    try {
      if (m.type === 'open') {
        loop = await openBenchLoop(m.settings, process.env, m.options);
        send({ type: 'ready' });
      } else if (loop) {
        const span = await loop.run(m.devices);
        loop.close();
        send({ type: 'done', ...span });
      }
    } catch (e) {
      send({ type: 'error', message: messageOf(e) });
    }
  })();
});
process.on('disconnect', () => {
  loop?.close();
  process.exitCode = 0;
  process.disconnect?.();
});
