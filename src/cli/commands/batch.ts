import { createWriteStream, type WriteStream } from 'node:fs';
import type { Command } from 'commander';
import { reportCsvHeader, reportCsvRow, STATES } from '../../batch/index.js';
import { ProvlineError } from '../../core/index.js';
import { reportRows, batchStatus, type BatchStatus } from '../../jobs/index.js';
import { claimOutcomes } from '../pipeline/claim-lot.js';
import type { CommandContext } from '../context.js';
import { openPipeline } from '../pipeline/open.js';

export function registerBatchCommands(program: Command, ctx: () => CommandContext): void {
  program
    .command('status')
    .description("A batch's progress: devices per state, rate, ETA and failures by code")
    .argument('<batch>', 'batch id (see `provline batches`)')
    .option('--json', 'print the status as JSON')
    .action(async (batchId: string, opts: { json?: boolean }) => {
      const c = ctx();
      const p = await openPipeline(c);
      try {
        const s = await batchStatus(p.journal, p.batches, batchId);
        if (opts.json) c.json(s);
        else c.print(formatStatus(s));
      } finally {
        await p.close();
      }
    });

  program
    .command('batches')
    .description('List batches, newest first')
    .option('--limit <n>', 'how many', '20')
    .option('--json', 'print the list as JSON')
    .action(async (opts: { limit: string; json?: boolean }) => {
      const c = ctx();
      const p = await openPipeline(c);
      try {
        const ids = await p.batches.list(Math.max(1, Number(opts.limit) || 20));
        const rows = await Promise.all(ids.map((id) => batchStatus(p.journal, p.batches, id)));
        if (opts.json) c.json(rows);
        else if (!rows.length) c.print('no batches yet (provline submit <csv> --profile <name>)');
        else {
          const lines = [
            'batch                        profile         created               total  registered  verified  failed  pending',
          ];
          for (const s of rows)
            lines.push(
              `${s.batchId.padEnd(28)} ${s.profile.padEnd(15)} ${s.createdAt.slice(0, 19).padEnd(21)} ${String(s.total).padStart(5)}  ${String(s.stages.registered).padStart(10)}  ${String(s.stages.verified).padStart(8)}  ${String(s.failed).padStart(6)}  ${String(s.pending).padStart(7)}`,
            );
          c.print(lines.join('\n'));
        }
      } finally {
        await p.close();
      }
    });

  program
    .command('report')
    .description('One row per serial: state, thing name, certificate id, timestamps, error')
    .argument('<batch>', 'batch id')
    .option('--format <f>', 'csv or json', 'csv')
    .option('--out <file>', 'write to this file instead of stdout')
    .action(async (batchId: string, opts: { format: string; out?: string }) => {
      const c = ctx();
      if (opts.format !== 'csv' && opts.format !== 'json')
        throw new ProvlineError('USAGE', `--format must be csv or json, not "${opts.format}"`, {
          kind: 'usage',
        });
      const p = await openPipeline(c);
      try {
        // Claim lots: each serial's outcome at the hook (provisioned, denied and why, not seen).
        const claim = await claimOutcomes(c, p, batchId);
        const out: NodeJS.WritableStream | WriteStream = opts.out ? createWriteStream(opts.out) : c.out;
        let n = 0;
        const json = opts.format === 'json';
        out.write(json ? '[\n' : reportCsvHeader(claim !== undefined));
        for await (const row of reportRows(p, batchId, claim)) {
          out.write(
            json ? `${n ? ',\n' : ''}  ${JSON.stringify(row)}` : reportCsvRow(row, claim !== undefined),
          );
          n++;
        }
        if (json) out.write('\n]\n');
        if (opts.out) {
          await new Promise<void>((resolve, reject) =>
            (out as WriteStream).end((e?: Error | null) => (e ? reject(e) : resolve())),
          );
          process.stderr.write(`${n} row(s) written to ${opts.out}\n`);
        }
      } finally {
        await p.close();
      }
    });
}

export function formatStatus(s: BatchStatus): string {
  const lines = [
    `batch ${s.batchId} (profile ${s.profile}, created ${s.createdAt})`,
    `  ${s.total} device(s)${s.rejected ? `, ${s.rejected} invalid line(s) rejected` : ''}`,
    `  ${STATES.map((st) => `${st} ${s.counts[st]}`).join(' · ')}`,
    s.registrationDone
      ? `  ${s.certificates === 'signed' ? 'signing' : 'registration'} finished: ${s.stages.registered} ${s.certificates}, ${s.failed} failed (${s.rate}/s over ${s.elapsedSeconds} s)`
      : s.stalled
        ? `  stalled: ${s.stages.registered}/${s.total} ${s.certificates}; nothing has moved for ${s.stalled.seconds} s (since ${s.stalled.lastActivity}): is a worker running, and can it reach Redis?`
        : `  ${s.certificates === 'signed' ? 'signing' : 'registering'}: ${s.stages.registered}/${s.total} at ${s.rate}/s, ETA ${s.etaSeconds ?? '?'} s`,
  ];
  if (s.aborted) lines.push(`  the batch could not run: ${s.aborted.message} [${s.aborted.code}]`);
  for (const [code, n] of Object.entries(s.failures)) lines.push(`  failed: ${n} × ${code}`);
  return lines.join('\n');
}
