import type { Command } from 'commander';
import { strategyFor } from '../../batch/strategies/index.js';
import { getProfile } from '../../config/index.js';
import { ProvlineError } from '../../core/index.js';
import type { Runner } from '../../jobs/index.js';
import {
  isConnectionError,
  batchStatus,
  RateMeter,
  type BatchStatus,
  checkFactoryCa,
  submitBatch,
  type SubmitDeps,
} from '../../jobs/index.js';
import { makeClients } from '../../cloud/index.js';
import { withHsm } from './hsm.js';
import { EXIT, ExitCode } from '../exit.js';
import type { CommandContext } from '../context.js';
import { prepareClaimLot, type ClaimLot } from '../pipeline/claim-lot.js';
import { openPipeline, startLocalWorkers, type PipelineHandles } from '../pipeline/open.js';
import { formatProblem } from './validate.js';

/** The factory-CA check of jitp/jitr lots, with this host's HSM and the account's cloud. */
export function factoryCaCheck(c: CommandContext): NonNullable<SubmitDeps['checkFactoryCa']> {
  return (strategy, profile) =>
    withHsm(c, async (hsm) => {
      const cloud = makeClients(c.runtime.aws);
      try {
        return await checkFactoryCa({ hsm, cloud }, strategy, profile, new Date());
      } finally {
        cloud.destroy();
      }
    });
}

interface SubmitOptions {
  profile: string;
  wait?: boolean;
  json?: boolean;
  skipInvalid?: boolean;
  skipExisting?: boolean;
  workers: 'auto' | 'local' | 'remote';
}

export function registerSubmit(program: Command, ctx: () => CommandContext): void {
  program
    .command('submit')
    .description('Validate a CSV batch, plan it and queue it for the HSM and registration stages')
    .argument('<csv>', 'CSV file: a header row with a "serial" column, then one row per device')
    .requiredOption('-p, --profile <name>', 'product profile (see `provline profiles`)')
    .option('--wait', 'show live progress until registration has finished')
    .option('--json', 'print the result as JSON')
    .option('--skip-invalid', 'queue the valid rows and record the invalid ones as rejected')
    .option('--skip-existing', 'leave out serials that other batches already hold')
    .option(
      '--workers <where>',
      'with --wait: "local" runs workers in this process, "remote" relies on `provline worker` processes, "auto" runs them here when none is connected',
      'auto',
    )
    .addHelpText(
      'after',
      '\nExit codes: 0 queued (with --wait: every device registered), 3 invalid input (nothing queued),\n4 with --wait: some devices failed, 1 the batch could not run.\n',
    )
    .action(async (csv: string, opts: SubmitOptions) => {
      const c = ctx();
      if (!['auto', 'local', 'remote'].includes(opts.workers))
        throw new ProvlineError('USAGE', `--workers must be auto, local or remote, not "${opts.workers}"`, {
          kind: 'usage',
        });
      const profile = getProfile(c.loaded, opts.profile);
      const p = await openPipeline(c);
      let runner: Runner | undefined;
      let claimLot: ClaimLot | undefined;
      try {
        // Claim lots: the claim and template are checked, published rows kept (docs/claim.md).
        if (strategyFor(profile).name === 'claim') claimLot = await prepareClaimLot(c, p, profile, csv);
        const result = await submitBatch(
          { ...p, checkFactoryCa: factoryCaCheck(c) },
          {
            csvPath: csv,
            profile,
            skipInvalid: opts.skipInvalid ?? false,
            skipExisting: opts.skipExisting ?? false,
            hsmChunk: c.loaded.config.workers.hsmChunk,
          },
        );
        if (result.status === 'invalid') {
          const { intake } = result;
          if (opts.json)
            c.json({
              submitted: false,
              rows: intake.rows,
              problemCount: intake.problemCount,
              problems: intake.problems,
            });
          else {
            const lines = [
              `${csv}: ${intake.problemCount} problem${intake.problemCount === 1 ? '' : 's'}; nothing was queued`,
            ];
            for (const pr of intake.problems.slice(0, 20)) lines.push(...formatProblem(pr));
            if (intake.problemCount > 20)
              lines.push(`  … and ${intake.problemCount - 20} more (provline validate --json)`);
            lines.push('Fix the file, or use --skip-invalid to queue the valid rows only.');
            c.print(lines.join('\n'));
          }
          throw new ExitCode(EXIT.invalidInput);
        }
        if (result.status === 'nothing-to-do') {
          if (opts.json) c.json({ submitted: false, ...result });
          else
            c.print(
              `${csv}: nothing to do: all ${result.rows - result.rejected} valid serial(s) already belong to earlier batches (skipped)`,
            );
          return;
        }
        const published = claimLot ? await claimLot.publish(result.batchId) : undefined;
        if (published && !opts.json)
          c.print(`allow-list of batch ${result.batchId} published for the hook: ${published.count} serials`);
        if (opts.json && (!opts.wait || published))
          c.json({
            submitted: true,
            batchId: result.batchId,
            accepted: result.accepted,
            skipped: result.skipped.length,
            retried: result.retried.length,
            rejected: result.rejected,
            ...(published ? { allowList: published.key } : {}),
          });
        else if (!opts.json) {
          const extra = [
            result.skipped.length ? `${result.skipped.length} skipped (already in other batches)` : '',
            result.retried.length ? `${result.retried.length} retried from earlier batches` : '',
            result.rejected ? `${result.rejected} invalid line(s) rejected` : '',
          ].filter(Boolean);
          c.print(
            `batch ${result.batchId}: ${result.accepted} device(s) queued (profile ${profile.name}${extra.length ? `; ${extra.join(', ')}` : ''})`,
          );
        }
        // Claim devices register themselves at first connect: nothing to wait for here.
        if (!opts.wait || published) return;
        const workers = await p.queues.workerCount();
        const local =
          opts.workers === 'local' ||
          (opts.workers === 'auto' && (workers.hsm === 0 || workers.register === 0));
        if (local) {
          if (!opts.json)
            process.stderr.write('running the workers in this process (no `provline worker` connected)\n');
          runner = await startLocalWorkers(c, p);
        }
        const status = await waitForRegistration(p, result.batchId, !opts.json);
        if (opts.json) c.json({ submitted: true, ...status });
        else c.print(finalLine(status));
        if (status.aborted) throw new ExitCode(EXIT.failed);
        if (status.failed > 0) throw new ExitCode(EXIT.partial);
      } finally {
        claimLot?.close();
        await runner?.close();
        await p.close();
      }
    });
}

function finalLine(s: BatchStatus): string {
  const lines = [
    `batch ${s.batchId}: ${s.stages.registered} of ${s.total} ${s.certificates}${s.certificates === 'signed' ? ' by the factory CA (AWS provisions each at its first connect)' : ''}, ${s.failed} failed, in ${s.elapsedSeconds} s (${s.rate}/s)`,
  ];
  if (s.aborted) lines.push(`  the batch could not run: ${s.aborted.message} [${s.aborted.code}]`);
  for (const [code, n] of Object.entries(s.failures)) lines.push(`  ${n} failed with ${code}`);
  if (s.failed) lines.push(`  details: provline report ${s.batchId} --format csv`);
  return lines.join('\n');
}

/**
 * Polls the batch until registration is done, drawing progress on stderr. Rides through a
 * Redis outage: the line says since when Redis has been unreachable, and polling goes on.
 */
export async function waitForRegistration(
  p: PipelineHandles,
  batchId: string,
  show: boolean,
  signal?: AbortSignal,
): Promise<BatchStatus> {
  const tty = process.stderr.isTTY;
  const meter = new RateMeter();
  let lastPrint = 0;
  for (;;) {
    let s: BatchStatus;
    try {
      s = await batchStatus(p.journal, p.batches, batchId);
    } catch (e) {
      if (!isConnectionError(e)) throw e;
      p.watch.unreachable(e);
      const now = Date.now();
      if (show && (tty || now - lastPrint >= 2000)) {
        lastPrint = now;
        const since = new Date(p.watch.unreachableSince ?? now).toISOString();
        const line = `stalled: Redis unreachable since ${since}; retrying`;
        process.stderr.write(tty ? `\r\x1b[K${line}` : `${line}\n`);
      }
      signal?.throwIfAborted();
      await new Promise((r) => setTimeout(r, 500));
      continue;
    }
    p.watch.reachable();
    const now = Date.now();
    const rate = s.stalled ? 0 : meter.add(now, s.stages.registered);
    if (show && (tty || now - lastPrint >= 2000 || s.registrationDone)) {
      lastPrint = now;
      const eta = s.registrationDone
        ? 'done'
        : s.stalled
          ? `stalled: nothing moved for ${s.stalled.seconds} s`
          : rate > 0
            ? `ETA ${Math.ceil(s.pending / rate)} s`
            : 'ETA …';
      const line = `keys ${s.stages.keyed}/${s.total} · ${s.certificates} ${s.stages.registered}/${s.total} · failed ${s.failed} · ${rate.toFixed(0)}/s · ${eta}`;
      process.stderr.write(tty ? `\r\x1b[K${line}` : `${line}\n`);
    }
    if (s.registrationDone) {
      if (show && tty) process.stderr.write('\n');
      return s;
    }
    signal?.throwIfAborted();
    await new Promise((r) => setTimeout(r, tty ? 250 : 500));
  }
}
