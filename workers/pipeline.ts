/**
 * The pipeline worker process (`provline worker`): re-enqueues unfinished batches, runs the
 * HSM-stage and registrar roles until SIGTERM or SIGINT, then drains (jobs in flight finish or
 * are handed back) and returns. The CLI parses the options and calls `runPipelineWorker`
 * through its entry points (src/cli/entries.ts, wired by workers/cli.ts).
 */
import type { PipelineWorkerOptions } from '../src/cli/index.js';
import { startRunner, sweepActive } from '../src/jobs/index.js';
import { processStop } from './signals.js';

export async function runPipelineWorker(o: PipelineWorkerOptions): Promise<void> {
  const prefix = o.config.redis.prefix;
  if (o.sweep) {
    const n = await sweepActive(o.redisUrl, prefix, o.config.workers.hsmChunk);
    if (n) o.log.info({ batches: n }, 'unfinished batches re-enqueued');
  }
  const stopped = o.stopSignal ?? processStop();
  const runner = await startRunner({
    redisUrl: o.redisUrl,
    runtime: o.runtime,
    workers: o.config.workers,
    roles: o.roles,
    prefix,
    log: o.log,
    hsmSettings: o.hsmSettings,
  });
  process.stderr.write(`provline worker ${process.pid}: roles ${o.roles.join(',')}, ready\n`);
  const sig = await stopped;
  process.stderr.write(`provline worker ${process.pid}: ${sig}, draining\n`);
  await runner.close();
  process.stderr.write(
    `provline worker ${process.pid}: stopped (${runner.done.hsm} HSM jobs, ${runner.done.register} batches)\n`,
  );
}
