/**
 * `provline device <serial> [--json] [--cert <certificateId>] [--log]`: what happened to one
 * device, across every batch it was in: batch, profile, strategy, every state with its time,
 * station and port, thing name, certificate id and that certificate's status in the registry
 * now (DescribeCertificate; an unreachable cloud is said, not fatal), errors with their codes;
 * `--log` adds the station's log of its last visits. Works for any strategy: it reads only the
 * journal's records, which every strategy writes the same way.
 */
import type { Command } from 'commander';
import type { VisitLog } from '../../batch/index.js';
import { ProvlineError, messageOf } from '../../core/index.js';
import { deviceHistory, deviceVisits, type BatchHistory, type DeviceHistory } from '../../jobs/index.js';
import type { CommandContext } from '../context.js';
import { openPipeline } from '../pipeline/open.js';

interface DeviceOptions {
  json?: boolean;
  cert?: string;
  log?: boolean;
}

/** The registry's word on a certificate now: its status, or why it could not be asked. */
export type CertificateStatus =
  | { certificateId: string; status: string }
  | { certificateId: string; status: 'NOT_FOUND' }
  | { certificateId: string; status: 'UNKNOWN'; unreachable: string };

/** How long the registry may take to answer before the device is shown without it. */
const REGISTRY_BUDGET_MS = 5_000;

export function registerDevice(program: Command, ctx: () => CommandContext): void {
  program
    .command('device')
    .description(
      "One device's whole history across batches: states, stations and ports, certificate and its status now, errors",
    )
    .argument('[serial]', 'the serial (IMEI for modems) as in the CSV')
    .option('--cert <certificateId>', 'find the device a certificate was issued to')
    .option('--log', "add the station's log of the device's last visits (commands and answers)")
    .option('--json', 'print the history as JSON')
    .addHelpText(
      'after',
      '\nExit codes: 0 found, 3 no such device (or certificate), 1 the journal is unreachable.\n',
    )
    .action(async (serialArg: string | undefined, opts: DeviceOptions) => {
      const c = ctx();
      if (!serialArg && !opts.cert)
        throw new ProvlineError('USAGE', 'name a serial, or a certificate with --cert <certificateId>', {
          kind: 'usage',
        });
      const p = await openPipeline(c);
      try {
        let serial = serialArg;
        if (opts.cert) {
          const found = await p.journal.serialOfCertificate(opts.cert);
          if (!found)
            throw new ProvlineError('CERTIFICATE_NOT_FOUND', `no device has certificate ${opts.cert}`, {
              kind: 'invalid-input',
              hint: 'Certificate ids are the 64 hex digits AWS IoT gives; `provline report <batch>` lists them per device.',
            });
          if (serial && serial !== found)
            throw new ProvlineError(
              'CERTIFICATE_NOT_FOUND',
              `certificate ${opts.cert} belongs to device ${found}, not ${serial}`,
              { kind: 'invalid-input' },
            );
          serial = found;
        }
        const history = await deviceHistory(p.journal, p.batches, serial!);
        if (!history)
          throw new ProvlineError(
            'SERIAL_NOT_FOUND',
            `no such device: ${serial} is in no batch of this journal`,
            {
              kind: 'invalid-input',
              hint: 'Check the serial (as written in the CSV), and that --config / --home point at the right journal.',
            },
          );
        const certificates = await certificateStatuses(c, history);
        const visits = opts.log ? await deviceVisits(p.journal, history.serial) : undefined;
        if (opts.json)
          c.json({
            ...history,
            batches: history.batches.map((b) => ({
              ...b,
              ...(b.certificateId ? { certificate: certificates.get(b.certificateId) } : {}),
            })),
            ...(visits ? { visits } : {}),
          });
        else c.print(formatHistory(history, certificates, visits));
      } finally {
        await p.close();
      }
    });
}

/**
 * DescribeCertificate for each certificate of the history, within one budget; a registry that
 * does not answer (no stand-in running, no network, no credentials) is reported per certificate.
 */
async function certificateStatuses(
  c: CommandContext,
  history: DeviceHistory,
): Promise<Map<string, CertificateStatus>> {
  const ids = [...new Set(history.batches.flatMap((b) => (b.certificateId ? [b.certificateId] : [])))];
  const out = new Map<string, CertificateStatus>();
  if (!ids.length) return out;
  let cloud;
  try {
    const { makeClients } = await import('../../cloud/index.js');
    cloud = makeClients(c.runtime.aws);
  } catch (e) {
    for (const id of ids) out.set(id, { certificateId: id, status: 'UNKNOWN', unreachable: messageOf(e) });
    return out;
  }
  try {
    const { describeCertificate } = await import('../../cloud/index.js');
    const signal = AbortSignal.timeout(REGISTRY_BUDGET_MS);
    for (const id of ids) {
      try {
        const d = await describeCertificate(cloud, id, { signal });
        out.set(
          id,
          d
            ? { certificateId: id, status: d.status ?? 'UNKNOWN' }
            : { certificateId: id, status: 'NOT_FOUND' },
        );
      } catch (e) {
        out.set(id, { certificateId: id, status: 'UNKNOWN', unreachable: messageOf(e) });
      }
    }
  } finally {
    cloud.destroy();
  }
  return out;
}

const iso = (ms: number): string => new Date(ms).toISOString();

function formatBatch(b: BatchHistory, certificates: Map<string, CertificateStatus>): string[] {
  const lines = [
    `batch ${b.batchId}${b.current ? ' (now)' : ' (earlier)'}: profile ${b.profile ?? '?'}, strategy ${b.strategy ?? '?'}, line ${b.line}`,
    `  thing ${b.thingName}, state ${b.state}`,
  ];
  for (const s of b.states)
    lines.push(
      `  ${s.state.padEnd(12)} ${iso(s.at)}${s.station ? `  station ${s.station}${s.port ? ` port ${s.port}` : ''}` : ''}`,
    );
  if (b.certificateId) {
    const cs = certificates.get(b.certificateId);
    const now = !cs
      ? ''
      : 'unreachable' in cs
        ? ` (status now unknown: the registry did not answer: ${cs.unreachable})`
        : cs.status === 'NOT_FOUND'
          ? ' (not in the registry now)'
          : ` (${cs.status} in the registry now)`;
    lines.push(`  certificate ${b.certificateId}${now}`);
  }
  if (b.error) lines.push(`  error [${b.error.code}] at stage ${b.error.stage}: ${b.error.message}`);
  return lines;
}

function formatVisit(v: VisitLog): string[] {
  const lines = [
    `visit ${iso(v.at)} station ${v.stationId} port ${v.port} (${v.driver}): ${v.outcome}${v.code ? ` [${v.code}]` : ''} in ${v.ms} ms${v.recorded.length ? `, recorded ${v.recorded.join(', ')}` : ''}${v.offline ? ' (offline: kept in the station cache, synced later)' : ''}`,
  ];
  for (const [i, l] of v.lines.entries()) {
    lines.push(`  ${String(l.t).padStart(6)} ms ${l.dir} ${l.text}`);
    if (v.omitted && i === Math.floor(v.lines.length / 2) - 1)
      lines.push(`  … ${v.omitted} lines left out …`);
  }
  return lines;
}

function formatHistory(
  h: DeviceHistory,
  certificates: Map<string, CertificateStatus>,
  visits: VisitLog[] | undefined,
): string {
  const lines = [
    `device ${h.serial}: ${h.batches.length} batch${h.batches.length === 1 ? '' : 'es'}`,
    ...h.batches.flatMap((b) => formatBatch(b, certificates)),
  ];
  if (visits) {
    lines.push(
      visits.length ? `station log (${visits.length} visit(s), newest first):` : 'station log: no visits',
    );
    for (const v of visits) lines.push(...formatVisit(v));
  }
  return lines.join('\n');
}
