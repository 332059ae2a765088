/**
 * `provline demo`: the main job on embedded defaults, end to end. It brings the local stack up
 * (Redis, the SoftHSM token, the AWS IoT stand-in), makes the demo KEKs and the JITP sensors'
 * factory CA (in the HSM, registered with its template), writes four demo CSVs (sensors with
 * provline-serial-v1 firmware and wrapped keys, registered in bulk; nRF91 modems with plain
 * keys; sensors on JITP, signed offline by the CA, whose things AWS makes at first connect),
 * submits them with live progress (and a fourth product provisioned by claim: the claim made in
 * the HSM, provline's pre-provisioning hook served in-process for the stand-in, the lot's
 * allow-list published, and one more claim sensor provisioned by trusted user: a temporary
 * claim from CreateProvisioningClaim handed to the device), runs station ports over socat pty pairs and plugs simulated
 * devices of both drivers in one after another, as a line would. Each device, once verified,
 * makes its first MQTT connect to the stand-in's data plane as its thing, and the stand-in's
 * events log is asked whether it saw each thing connect. It prints a final table, writes the
 * report files, and stops what it started unless --keep. Exit 0 only when every device is
 * verified and connected.
 */
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { reportCsvHeader, reportCsvRow } from '../../batch/index.js';
import { getProfile } from '../../config/index.js';
import { ProvlineError } from '../../core/index.js';
import { startPtyPair, type DeviceResult, type PtyPair } from '../../flash/index.js';
import { DescribeThingCommand } from '@aws-sdk/client-iot';
import { makeClients } from '../../cloud/index.js';
import { prepareClaimLot, startLocalClaim, type LocalClaim } from '../pipeline/claim-lot.js';
import { provisionByTrustedUser, submitTrustedUserLot } from '../pipeline/trusted-user.js';
import type { StrategyName } from '../../config/index.js';
import { openHsm, type Hsm } from '../../hsm/index.js';
import { checkFactoryCa, type CaPreflightProfile, reportRows, submitBatch } from '../../jobs/index.js';
import { stackDown, stackStatus, stackUp } from '../../stack/index.js';
import type { CommandContext } from '../context.js';
import { EXIT, ExitCode } from '../exit.js';
import { intOption } from '../options.js';
import { prepareFactoryCa, runProductLines, sharedKek, type ProductLine } from '../pipeline/line.js';
import { openPipeline, startLocalWorkers, type PipelineHandles } from '../pipeline/open.js';
import { waitForRegistration } from './submit.js';

interface DemoOptions {
  devices: number;
  ports: number;
  realLineRate?: boolean;
  keep?: boolean;
}

/** One product line of the demo, and the batch its devices were submitted in. */
interface Line extends ProductLine {
  batchId?: string;
}

export function registerDemo(program: Command, ctx: () => CommandContext): void {
  program
    .command('demo')
    .description(
      'Run the main job on embedded defaults: local stack, CSV, HSM, bulk registration, flashing and verification',
    )
    .option(
      '--devices <n>',
      'devices in the demo (dealt to the four products in turn)',
      intOption('--devices', 1, 10_000),
      24,
    )
    .option(
      '--ports <k>',
      'station ports (dealt to the products in turn; at least one each)',
      intOption('--ports', 1, 32),
      4,
    )
    .option('--real-line-rate', 'pace the simulated devices at 115200 baud, as a real serial line is')
    .option('--keep', 'leave the local stack running afterwards')
    .addHelpText(
      'after',
      '\nExit codes: 0 every device verified and connected, 4 some were not, 1 the demo could not run.\n',
    )
    .action(async (opts: DemoOptions) => runDemo(ctx(), opts));
}

async function runDemo(c: CommandContext, opts: DemoOptions): Promise<void> {
  const home = c.loaded.home;
  const wasRunning = stackStatus(home).redis.running;
  const t0 = performance.now();
  const step = (s: string): void => c.print(`==> ${s}`);
  const elapsed = (): string => `${((performance.now() - t0) / 1000).toFixed(1)} s`;

  step(`local stack in ${home}`);
  const status = await stackUp(home);
  c.print(
    `    redis ${status.redis.url}, SoftHSM token "${status.hsm.token}", AWS IoT stand-in ${status.aws.endpoint ?? ''}`,
  );
  const dir = join(home, 'demo');
  mkdirSync(dir, { recursive: true });
  const pairs: PtyPair[] = [];
  let p: PipelineHandles | undefined;
  let hsm: Hsm | undefined;
  let claim: LocalClaim | undefined;
  try {
    // Serials are new on every run, so the demo can run again on the same home.
    const run = nextRun(join(dir, 'runs'));
    const tag = String(run).padStart(3, '0');
    const products: Array<{ profile: string; serial: (i: number) => string }> = [
      { profile: 'demo', serial: (i) => `DEMO${tag}-${String(i + 1).padStart(4, '0')}` },
      // 15-digit IMEIs: a demo TAC, the run, the device.
      {
        profile: 'nrf91-plain',
        serial: (i) => `3526561${String(run % 1000).padStart(3, '0')}${String(i + 1).padStart(5, '0')}`,
      },
      { profile: 'sensor-jitp', serial: (i) => `JITP${tag}-${String(i + 1).padStart(4, '0')}` },
      // Fleet provisioning by claim: the devices register themselves through provline's hook.
      { profile: 'sensor-claim', serial: (i) => `CLAIM${tag}-${String(i + 1).padStart(4, '0')}` },
    ];
    // Devices dealt to the products in turn; a product dealt none sits this run out.
    const lines: Line[] = products
      .map((pr, k) => ({
        profile: getProfile(c.loaded, pr.profile),
        serials: Array.from(
          { length: Math.floor((opts.devices + products.length - 1 - k) / products.length) },
          (_, i) => pr.serial(i),
        ),
        ports: [],
      }))
      .filter((l) => l.serials.length > 0);
    const byName = (name: string): Line | undefined => lines.find((l) => l.profile.name === name);

    step('HSM: transport KEKs for the products');
    hsm = await openHsm(await c.hsmSettings());
    // The sensors (bulk and JITP) share one KEK their simulated firmware holds.
    const sensorKek = await sharedKek(hsm, getProfile(c.loaded, 'demo').kekLabel, join(dir, 'demo-kek.bin'));
    for (const line of lines) if (line.profile.driver === 'provline-serial-v1') line.kek = sensorKek;
    const modemKek = getProfile(c.loaded, 'nrf91-plain').kekLabel;
    if (!(await hsm.findKek(modemKek))) await hsm.createKek({ label: modemKek });
    c.print(
      `    ${getProfile(c.loaded, 'demo').kekLabel} (imported; the simulated sensors hold it too), ${modemKek} (made in the HSM)`,
    );
    const jitp = byName('sensor-jitp');
    if (jitp) {
      step('factory CA for the JITP sensors: key in the HSM, registered with its JITP template');
      const ca = await prepareFactoryCa(c, hsm, jitp.profile);
      c.print(
        `    CA "${jitp.profile.ca!.label}" ${ca.certificateId.slice(0, 16)}… ${ca.status}, auto-registration ${ca.autoRegistrationStatus}`,
      );
    }

    p = await openPipeline(c);
    const claimLine = byName('sensor-claim');
    if (claimLine) {
      step("claim for the claim sensors: key in the HSM, the fleet template with provline's hook");
      claim = await startLocalClaim(c, p, hsm, claimLine.profile);
      c.print(`    hook ${claimLine.profile.claim!.hookArn} served at ${claim.hook.url}`);
    }
    for (const line of lines) {
      const csv = join(dir, `${line.profile.name}-run${run}.csv`);
      const caCheck = async (strategy: StrategyName, profile: CaPreflightProfile) => {
        const cloud = makeClients(c.runtime.aws);
        try {
          return await checkFactoryCa({ hsm: hsm!, cloud }, strategy, profile, new Date());
        } finally {
          cloud.destroy();
        }
      };
      const hw = line.profile.name === 'demo' || line.profile.name === 'sensor-claim';
      const header = hw ? 'serial,hw_rev' : 'serial';
      const rows = line.serials.map((s, i) => (hw ? `${s},${'ABC'[i % 3]}` : s));
      writeFileSync(csv, `${header}\n${rows.join('\n')}\n`);
      const claimLot = line === claimLine ? await prepareClaimLot(c, p, line.profile, csv, hsm) : undefined;
      const r = await submitBatch(
        { ...p, checkFactoryCa: caCheck },
        {
          csvPath: csv,
          profile: line.profile,
          hsmChunk: c.loaded.config.workers.hsmChunk,
        },
      );
      if (r.status !== 'submitted')
        throw new ProvlineError('DEMO_FAILED', `the demo batch ${csv} was not submitted (${r.status})`);
      line.batchId = r.batchId;
      if (claimLot)
        try {
          const published = await claimLot.publish(r.batchId);
          c.print(`    allow-list of the claim lot published for the hook: ${published.count} serials`);
        } finally {
          claimLot.close();
        }
      step(
        `submitted ${csv}: batch ${r.batchId}, ${r.accepted} devices, profile ${line.profile.name} (${line.profile.driver})`,
      );
    }

    // One more claim sensor, for an installer's app: provisioning by trusted user (below).
    let trusted: { serial: string; batchId: string } | undefined;
    if (claimLine) {
      const serial = `TRUST${tag}-0001`;
      const csv = join(dir, `sensor-claim-trusted-run${run}.csv`);
      const batchId = await submitTrustedUserLot(
        c,
        p,
        hsm,
        claimLine.profile,
        csv,
        `serial,hw_rev\n${serial},A\n`,
      );
      trusted = { serial, batchId };
      step(
        `submitted ${csv}: batch ${batchId}, 1 device for provisioning by trusted user (allow-list published)`,
      );
    }

    step('HSM stage and bulk registration (workers in this process)');
    const runner = await startLocalWorkers(c, p);
    try {
      for (const line of lines) {
        if (line === claimLine) {
          c.print(
            `    claim lot ${line.batchId!}: nothing to register; each device registers itself at its first connect`,
          );
          continue;
        }
        const s = await waitForRegistration(p, line.batchId!, true);
        c.print(
          `    batch ${s.batchId}: ${s.stages.registered}/${s.total} ${s.certificates}, ${s.failed} failed (${elapsed()})`,
        );
        if (s.failed || s.aborted)
          throw new ProvlineError(
            'DEMO_FAILED',
            `registration of batch ${s.batchId} failed for ${s.failed} device(s)`,
            {
              hint: `provline report ${s.batchId} --home ${home} shows why`,
            },
          );
      }
    } finally {
      await runner.close();
    }

    if (jitp)
      c.print(
        `    JITP lot: ${await thingsInRegistry(c, jitp)} of ${jitp.serials.length} things in the registry: AWS makes each at its device's first connect`,
      );

    // Ports dealt to the products in turn, at least one each.
    const portCount = Math.max(opts.ports, lines.length);
    for (let i = 0; i < portCount; i++) {
      const pair = await startPtyPair(dir, `port${i + 1}`);
      pairs.push(pair);
      lines[i % lines.length]!.ports.push(pair);
    }
    step(
      `flashing: ${portCount} station ports over socat pty pairs, devices plugged in one after another${opts.realLineRate ? ' at 115200 baud' : ''}`,
    );
    const tty = process.stderr.isTTY;
    const { results, seen } = await runProductLines(p, lines, hsm, {
      stationId: 'demo',
      devices: c.entries.devices,
      ...(opts.realLineRate ? { realLineRate: true } : {}),
      iotEndpoint: status.aws.endpoint,
      onResult: (e) => {
        const line = `    ${e.port.split('/').pop()!.replace('-host', '')}  ${e.serial.padEnd(16)} ${e.outcome}${e.connected ? ', connected' : ''}${e.code ? ` [${e.code}]` : ''} in ${e.ms} ms`;
        if (tty) process.stderr.write(`${line}\n`);
        else c.print(line);
      },
    });
    if (jitp)
      c.print(
        `    JITP lot: ${await thingsInRegistry(c, jitp)} of ${jitp.serials.length} things in the registry now, each made by JITP at its device's first connect`,
      );
    printTable(c, results, seen);
    let trustedOk = true;
    if (claimLine && trusted) {
      step(
        "provisioning by trusted user: an installer's app gets a temporary claim (CreateProvisioningClaim)",
      );
      try {
        const d = await provisionByTrustedUser(c, p, hsm, claimLine.profile, {
          ...trusted,
          mqttEndpoint: status.aws.mqttEndpoint ?? '',
        });
        c.print(
          `    temporary claim ${d.temporaryClaimId.slice(0, 16)}… expires ${d.expiration.toISOString()}; device ${d.serial} provisioned itself with it through the hook as thing ${d.thingName} (certificate ${d.certificateId.slice(0, 16)}…) and connected`,
        );
      } catch (e) {
        trustedOk = false;
        c.print(`    trusted-user device ${trusted.serial} failed: ${(e as Error).message}`);
      }
    }

    step('reports');
    for (const line of lines) {
      const file = join(dir, `report-${line.batchId}.csv`);
      await writeReport(p, line.batchId!, file);
      c.print(`    ${file}`);
    }
    const verified = results.filter((r) => r.outcome === 'verified' || r.outcome === 'already').length;
    const connected = results.filter((r) => r.connected && seen.has(r.serial)).length;
    step(
      `${verified} of ${opts.devices} devices verified by the devices themselves; ${connected} of ${opts.devices} connected to the stand-in's MQTT endpoint ${status.aws.mqttEndpoint ?? ''} as their things (the stand-in's events log saw each connect), in ${elapsed()}`,
    );
    if (verified !== opts.devices || connected !== opts.devices || !trustedOk)
      throw new ExitCode(EXIT.partial);
  } finally {
    await claim?.close();
    hsm?.close();
    await p?.close();
    for (const pair of pairs) await pair.stop().catch(() => undefined);
    if (!opts.keep && !wasRunning) {
      step('stopping the local stack (use --keep to leave it running)');
      await stackDown(home);
    }
  }
}

/** How many of a lot's things the registry holds (DescribeThing per device: a demo-sized lot). */
async function thingsInRegistry(c: CommandContext, line: Line): Promise<number> {
  const cloud = makeClients(c.runtime.aws);
  try {
    let n = 0;
    for (const serial of line.serials) {
      const thingName = line.profile.thingName.replace('{serial}', serial);
      n += await cloud.iot.send(new DescribeThingCommand({ thingName })).then(
        () => 1,
        () => 0,
      );
    }
    return n;
  } finally {
    cloud.destroy();
  }
}

function nextRun(file: string): number {
  const n = existsSync(file) ? Number(readFileSync(file, 'utf8').trim()) + 1 || 1 : 1;
  writeFileSync(file, `${n}\n`);
  return n;
}

function printTable(c: CommandContext, results: DeviceResult[], seen: Map<string, string>): void {
  const rows = [...results].sort((a, b) => a.serial.localeCompare(b.serial));
  const out = ['', '    serial            port    result     ms     bytes  connected as'];
  for (const r of rows)
    out.push(
      `    ${r.serial.padEnd(17)} ${r.port.split('/').pop()!.replace('-host', '').padEnd(7)} ${r.outcome.padEnd(10)} ${String(r.ms).padStart(5)}  ${String(r.bytes ?? '').padStart(6)}  ${r.connected && seen.has(r.serial) ? seen.get(r.serial)! : '-'}${r.code ? `  ${r.code}` : ''}`,
    );
  c.print(out.join('\n'));
}

async function writeReport(p: PipelineHandles, batchId: string, file: string): Promise<void> {
  const out = createWriteStream(file);
  out.write(reportCsvHeader());
  for await (const row of reportRows(p, batchId)) out.write(reportCsvRow(row));
  await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
}
