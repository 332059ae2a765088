import type { Command } from 'commander';
import {
  makeClients,
  checkDevices,
  findOrphans,
  removeOrphan,
  type DeviceCheck,
  type Orphan,
  Pacer,
} from '../../cloud/index.js';
import { strategyFor } from '../../batch/strategies/index.js';
import { ProvlineError } from '../../core/index.js';
import type { CommandContext } from '../context.js';
import { EXIT, ExitCode } from '../exit.js';
import { intOption } from '../options.js';
import { claimLines, reconcileClaim } from '../pipeline/claim-lot.js';
import { openPipeline } from '../pipeline/open.js';

/** Certificates are looked at from this long before the batch was created (clock skew). */
const SKEW_MS = 60 * 60_000;

export function registerReconcile(program: Command, ctx: () => CommandContext): void {
  program
    .command('reconcile')
    .description(
      'Compare a batch with the AWS IoT registry: thing, ACTIVE certificate, attachments, policy; list orphan certificates',
    )
    .argument('<batch>', 'batch id')
    .option('--fix', 'deactivate, detach and delete orphan certificates')
    .option(
      '--tps <n>',
      'AWS calls per second (default 20 against AWS, 500 against the local stand-in)',
      intOption('--tps', 1),
    )
    .option('--json', 'print the findings as JSON')
    .addHelpText(
      'after',
      '\nAn orphan is a certificate minted for a device key of this batch that the journal does not\nrecord. Exit codes: 0 clean (or fixed), 4 problems or orphans remain, 1 reconcile could not run.\n',
    )
    .action(async (batchId: string, opts: { fix?: boolean; tps?: number; json?: boolean }) => {
      const c = ctx();
      const p = await openPipeline(c);
      const cloud = makeClients(c.runtime.aws, { maxAttempts: 3 });
      try {
        const plan = await p.batches.plan(batchId);
        const meta = await p.batches.meta(batchId);
        const counts = await p.journal.counts(batchId);
        if (opts.fix && counts.registering > 0)
          throw new ProvlineError(
            'RECONCILE_BUSY',
            `batch ${batchId} has ${counts.registering} device(s) being registered right now; --fix could delete a certificate about to be recorded`,
            {
              hint: 'Wait until `provline status` shows registration finished, then run reconcile --fix again.',
            },
          );
        // AWS allows about 10 TPS for DescribeCertificate and ListThingPrincipals (aws-iot.md §6.3).
        const pacer = new Pacer({ perSecond: opts.tps ?? (c.runtime.aws.useRealAws ? 20 : 500) });
        const recorded: Parameters<typeof checkDevices>[1] = [];
        const offline = strategyFor(plan.profile).certificate.by === 'factory-ca';
        let awaiting = 0;
        const keys: Parameters<typeof findOrphans>[1]['devices'] = [];
        for (let i = 0; i < plan.devices.length; i += 500) {
          const page = plan.devices.slice(i, i + 500);
          const recs = await p.journal.getMany(page.map((d) => d.serial));
          recs.forEach((rec) => {
            if (!rec || rec.batch !== batchId) return;
            const f = rec.fields;
            if (f.publicKey)
              keys.push({
                serial: rec.serial,
                thingName: rec.thingName,
                publicKeyPem: f.publicKey,
                ...(f.certificateId ? { certificateId: f.certificateId } : {}),
              });
            // A factory-CA certificate reaches AWS only at the device's first connect: until the
            // device is connected there is nothing in the registry to check.
            if (offline && f.certificateId && rec.state !== 'connected' && rec.state !== 'failed') awaiting++;
            if (
              f.certificateId &&
              (offline ? ['connected'] : ['registered', 'flashed', 'verified', 'connected']).includes(
                rec.state,
              )
            )
              recorded.push({
                serial: rec.serial,
                thingName: rec.thingName,
                certificateId: f.certificateId,
                policyName: plan.profile.policyName,
              });
          });
        }
        const tty = process.stderr.isTTY && !opts.json;
        const progress = (what: string, done: number, total?: number): void => {
          if (tty) process.stderr.write(`\r\x1b[K${what} ${done}${total ? `/${total}` : ''}`);
        };
        const checks: DeviceCheck[] = await checkDevices(cloud, recorded, {
          pacer,
          onProgress: (d, t) => progress('checking devices', d, t),
        });
        const orphans: Orphan[] = await findOrphans(cloud, {
          devices: keys,
          since: new Date(meta.createdAt - SKEW_MS),
          pacer,
          onProgress: (scanned) => progress('scanning certificates', scanned),
        });
        if (tty) process.stderr.write('\r\x1b[K');
        const removed: string[] = [];
        if (opts.fix)
          for (const o of orphans) {
            await removeOrphan(cloud, o, { pacer });
            removed.push(o.certificateId);
          }
        const bad = checks.filter((x) => x.problems.length);
        // Claim lots: the hook's view of each serial, and things no lot allowed.
        const claim = await reconcileClaim(c, p, cloud, plan);
        const result = {
          batchId,
          checked: recorded.length,
          sound: recorded.length - bad.length,
          ...(offline ? { awaitingFirstConnect: awaiting } : {}),
          problems: bad,
          orphans,
          removed,
          ...(claim ? { claim } : {}),
        };
        if (opts.json) c.json(result);
        else {
          const lines = [
            `batch ${batchId}: ${result.sound} of ${result.checked} ${offline ? 'connected' : 'registered'} device(s) sound in the registry; ${orphans.length} orphan certificate(s)${opts.fix ? `, ${removed.length} removed` : ''}`,
          ];
          if (offline)
            lines.push(
              `  ${awaiting} device(s) signed by the factory CA and not yet connected: AWS registers each at its first connect`,
            );
          for (const b of bad.slice(0, 50))
            for (const pr of b.problems) lines.push(`  ${b.serial}: ${pr.message} [${pr.code}]`);
          for (const o of orphans)
            lines.push(
              `  orphan: certificate ${o.certificateId} (${o.status}) for ${o.serial}${o.things.length ? `, attached to ${o.things.join(', ')}` : ''}${opts.fix ? ' — removed' : ''}`,
            );
          if (orphans.length && !opts.fix)
            lines.push('  run again with --fix to deactivate and delete the orphans');
          if (claim) lines.push(...claimLines(claim));
          c.print(lines.join('\n'));
        }
        if (bad.length || (orphans.length && !opts.fix) || (claim && claim.outside.length))
          throw new ExitCode(EXIT.partial);
      } finally {
        cloud.destroy();
        await p.close();
      }
    });
}
