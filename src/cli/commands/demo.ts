/**
 * `provline demo`: the main job on embedded defaults, end to end. It brings the local stack up
 * (Redis, the SoftHSM token, the AWS IoT stand-in), makes the demo KEKs and the JITP sensors'
 * factory CA (in the HSM, registered with its template), writes four demo CSVs (sensors with
 * provline-serial-v1 firmware and wrapped keys, registered in bulk; nRF91 modems with plain
 * keys; sensors on JITP, signed offline by the CA, whose things AWS makes at first connect),
 * submits them with live progress (and a fourth product provisioned by claim: the claim made in
 * the HSM, provline's pre-provisioning hook served in-process for the stand-in, the lot's
 * allow-list published), runs station ports over socat pty pairs and plugs simulated
 * devices of both drivers in one after another, as a line would. Each device, once verified,
 * makes its first MQTT connect to the stand-in's data plane as its thing, and the stand-in's
 * events log is asked whether it saw each thing connect. It prints a final table, writes the
 * report files, and stops what it started unless --keep. Exit 0 only when every device is
 * verified and connected.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import { startSimulator } from '../../../devices/index.js';
import { reportCsvHeader, reportCsvRow } from '../../batch/report.js';
import { getProfile, type ResolvedProfile } from '../../config/load.js';
import { ProvlineError } from '../../core/errors.js';
import {
  JournalStore,
  runStation,
  startPtyPair,
  type DeviceResult,
  type PtyPair,
  type StationEvent,
} from '../../flash/index.js';
import { DescribeThingCommand } from '@aws-sdk/client-iot';
import * as cloudCa from '../../cloud/ca.js';
import type { CaDescription } from '../../cloud/ca.js';
import { makeClients, requireBucket, requireRoleArn } from '../../cloud/clients.js';
import {
  makeHandler,
  mapInStandIn,
  publicKeysFromPem,
  startHookRunner,
  type HookRunner,
} from '../../cloud/hook/index.js';
import { ClaimStore, createClaim, HOOK_PREFIX } from '../../jobs/claim.js';
import { prepareClaimLot } from '../pipeline/claim-lot.js';
import type { StrategyName } from '../../config/schema.js';
import { isProvlineError } from '../../core/errors.js';
import * as hsmCa from '../../hsm/ca.js';
import { openHsm, type Hsm } from '../../hsm/hsm.js';
import { checkFactoryCa, type CaPreflightProfile } from '../../jobs/ca-preflight.js';
import { reportRows } from '../../jobs/report.js';
import { stationJournal } from '../../jobs/station-store.js';
import { submitBatch } from '../../jobs/submit.js';
import { stackDown, stackStatus, stackUp } from '../../stack/stack.js';
import type { CommandContext } from '../context.js';
import { EXIT, ExitCode } from '../exit.js';
import { intOption } from '../options.js';
import { openPipeline, startLocalWorkers, type PipelineHandles } from '../pipeline/open.js';
import { waitForRegistration } from './submit.js';

interface DemoOptions {
  devices: number;
  ports: number;
  realLineRate?: boolean;
  keep?: boolean;
}

/** One product line of the demo: a profile, its devices and the ports its station runs. */
interface Line {
  profile: ResolvedProfile;
  serials: string[];
  batchId?: string;
  ports: PtyPair[];
  kek?: Buffer;
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
  let hook: HookRunner | undefined;
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
    const sensorKek = await ensureDemoKek(
      hsm,
      getProfile(c.loaded, 'demo').kekLabel,
      join(dir, 'demo-kek.bin'),
    );
    for (const line of lines) if (line.profile.driver === 'provline-serial-v1') line.kek = sensorKek;
    const modemKek = getProfile(c.loaded, 'nrf91-plain').kekLabel;
    if (!(await hsm.findKek(modemKek))) await hsm.createKek({ label: modemKek });
    c.print(
      `    ${getProfile(c.loaded, 'demo').kekLabel} (imported; the simulated sensors hold it too), ${modemKek} (made in the HSM)`,
    );
    const jitp = byName('sensor-jitp');
    if (jitp) {
      step('factory CA for the JITP sensors: key in the HSM, registered with its JITP template');
      const ca = await ensureDemoCa(c, hsm, jitp.profile);
      c.print(
        `    CA "${jitp.profile.ca!.label}" ${ca.certificateId.slice(0, 16)}… ${ca.status}, auto-registration ${ca.autoRegistrationStatus}`,
      );
    }

    p = await openPipeline(c);
    const claimLine = byName('sensor-claim');
    if (claimLine) {
      step("claim for the claim sensors: key in the HSM, the fleet template with provline's hook");
      hook = await startDemoClaim(c, p, hsm, claimLine.profile);
      c.print(`    hook ${claimLine.profile.claim!.hookArn} served at ${hook.url}`);
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
    const { results, seen } = await flashLines(c, p, lines, hsm, opts, status.aws.endpoint);
    if (jitp)
      c.print(
        `    JITP lot: ${await thingsInRegistry(c, jitp)} of ${jitp.serials.length} things in the registry now, each made by JITP at its device's first connect`,
      );
    printTable(c, results, seen);

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
    if (verified !== opts.devices || connected !== opts.devices) throw new ExitCode(EXIT.partial);
  } finally {
    await hook?.close();
    hsm?.close();
    await p?.close();
    for (const pair of pairs) await pair.stop().catch(() => undefined);
    if (!opts.keep && !wasRunning) {
      step('stopping the local stack (use --keep to leave it running)');
      await stackDown(home);
    }
  }
}

/**
 * The claim profile's claim (made once: `claim create` is idempotent) and provline's hook served
 * in this process, mapped into the stand-in as `claim.hookArn`.
 */
async function startDemoClaim(
  c: CommandContext,
  p: PipelineHandles,
  hsm: Hsm,
  profile: ResolvedProfile,
): Promise<HookRunner> {
  const cloud = makeClients(c.runtime.aws, { maxAttempts: 2 });
  const { state } = await createClaim(
    { cloud, store: new ClaimStore(p.redis, p.prefix), hsm: () => Promise.resolve(hsm) },
    profile,
  ).catch((e: unknown) => {
    cloud.destroy();
    throw e;
  });
  const runner = await startHookRunner(
    makeHandler({
      s3: cloud.s3,
      bucket: requireBucket(cloud.aws),
      prefix: HOOK_PREFIX,
      trusted: publicKeysFromPem(state.signingPublicKeyPem),
    }),
  );
  await mapInStandIn(cloud.aws.endpoint!, profile.claim!.hookArn, runner.url);
  return {
    ...runner,
    close: async () => {
      await runner.close();
      cloud.destroy();
    },
  };
}

/** The factory CA of a JITP profile, made in the HSM and registered with its template (idempotent). */
async function ensureDemoCa(c: CommandContext, hsm: Hsm, profile: ResolvedProfile): Promise<CaDescription> {
  const settings = profile.ca!;
  const now = new Date();
  const exists = await hsmCa.describeCa(hsm, settings, now).then(
    () => true,
    (e: unknown) => {
      if (isProvlineError(e) && e.code === 'CA_KEY_NOT_FOUND') return false;
      throw e;
    },
  );
  if (!exists) await hsmCa.createCa(hsm, { settings, now, csr: false });
  const view = await hsmCa.describeCa(hsm, settings, now);
  const cloud = makeClients(c.runtime.aws);
  try {
    return await cloudCa.registerCa(cloud, {
      caCertificatePem: view.certificatePem,
      mode: 'DEFAULT',
      verificationCertificate: (registrationCode) =>
        hsmCa.signVerificationCertificate(hsm, { ca: settings, registrationCode, now: new Date() }),
      registrationConfig: {
        templateBody: readFileSync(profile.templatePath, 'utf8'),
        roleArn: requireRoleArn(c.runtime.aws),
      },
    });
  } finally {
    cloud.destroy();
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

/**
 * Runs one station per product over its ports, and on each port plugs the product's devices
 * in one after another: a simulator attaches to the device end, the station finds it, flashes
 * and verifies it, then the device is unplugged and the next one comes.
 */
async function flashLines(
  c: CommandContext,
  p: PipelineHandles,
  lines: Line[],
  hsm: Hsm,
  opts: DemoOptions,
  iotEndpoint: string | null,
): Promise<{ results: DeviceResult[]; seen: Map<string, string> }> {
  const results: DeviceResult[] = [];
  const seen = new Map<string, string>();
  const checks: Promise<void>[] = [];
  const waiting = new Map<string, (r: DeviceResult) => void>();
  const tty = process.stderr.isTTY;
  const onEvent = (e: StationEvent): void => {
    if (e.event !== 'result') return;
    results.push(e);
    const line = `    ${e.port.split('/').pop()!.replace('-host', '')}  ${e.serial.padEnd(16)} ${e.outcome}${e.connected ? ', connected' : ''}${e.code ? ` [${e.code}]` : ''} in ${e.ms} ms`;
    if (tty) process.stderr.write(`${line}\n`);
    else c.print(line);
    // Asked as each device connects, while its entries are surely in the log's window.
    if (e.connected && iotEndpoint)
      checks.push(seenConnecting(p, iotEndpoint, e.serial, seen).catch(() => undefined));
    waiting.get(e.serial)?.(e);
  };
  const stop = new AbortController();
  const claims = new ClaimStore(p.redis, p.prefix);
  const store = new JournalStore(stationJournal(p.journal, p.batches, (name) => claims.view(name)));
  const stations = lines.map((line) =>
    runStation({
      stationId: 'demo',
      profile: {
        name: line.profile.name,
        driver: line.profile.driver,
        driverSettings: line.profile.driverSettings,
        ...(line.profile.station.firstConnect !== undefined
          ? { firstConnect: line.profile.station.firstConnect }
          : {}),
      },
      ports: line.ports.map((x) => x.host),
      store,
      keys: () => Promise.resolve(hsm),
      stop: stop.signal,
      onEvent,
    }),
  );
  const plugIn = async (line: Line, port: PtyPair, serials: string[]): Promise<void> => {
    for (const serial of serials) {
      const done = new Promise<DeviceResult>((resolve) => waiting.set(serial, resolve));
      const sim = await startSimulator({
        driver: line.profile.driver,
        port: port.device,
        serial,
        ...(line.kek ? { kek: line.kek } : {}),
        ...(opts.realLineRate ? { baudRate: 115_200 } : {}),
      });
      const timeout = sleep(120_000).then(() => undefined);
      await Promise.race([done, timeout]);
      waiting.delete(serial);
      await sim.close(); // unplugged
      await sleep(50);
    }
  };
  try {
    await Promise.all(
      lines.flatMap((line) =>
        line.ports.map((port, i) =>
          plugIn(
            line,
            port,
            line.serials.filter((_, j) => j % line.ports.length === i),
          ),
        ),
      ),
    );
  } finally {
    stop.abort();
    await Promise.all(stations);
  }
  await Promise.all(checks);
  return { results, seen };
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

/**
 * Whether the stand-in saw the device connect as its thing: a `connect.accepted` entry for the
 * thing name in its events log (GET /_emulator/events, the local stack only), noted in `seen`
 * (serial → thing name). The station's word (the device's own CONNACK 0) is checked against the
 * other end of the connection.
 */
async function seenConnecting(
  p: PipelineHandles,
  iotEndpoint: string,
  serial: string,
  seen: Map<string, string>,
): Promise<void> {
  const rec = await p.journal.get(serial);
  if (!rec) return;
  const res = await fetch(`${iotEndpoint}/_emulator/events?clientId=${encodeURIComponent(rec.thingName)}`);
  if (!res.ok) return;
  const { events } = (await res.json()) as { events: { kind: string }[] };
  if (events.some((e) => e.kind === 'connect.accepted')) seen.set(serial, rec.thingName);
}

async function writeReport(p: PipelineHandles, batchId: string, file: string): Promise<void> {
  const out = createWriteStream(file);
  out.write(reportCsvHeader());
  for await (const row of reportRows(p, batchId)) out.write(reportCsvRow(row));
  await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
}

/**
 * The demo's transport KEK: a random AES-256 key imported into the HSM, with its raw value kept
 * (0600) in the demo directory because the simulated devices must hold the same key, as a real
 * device maker would. A production KEK is created in the HSM or agreed out of band.
 */
async function ensureDemoKek(hsm: Hsm, label: string, file: string): Promise<Buffer> {
  const existing = await hsm.findKek(label);
  if (existing && existsSync(file)) return readFileSync(file);
  if (existing) {
    throw new ProvlineError(
      'DEMO_FAILED',
      `the HSM holds a KEK "${label}" whose value the demo devices do not have (${file} is missing)`,
      {
        hint: 'Remove the demo home (or its hsm/ directory) and run the demo again.',
      },
    );
  }
  const value = existsSync(file) ? readFileSync(file) : randomBytes(32);
  writeFileSync(file, value, { mode: 0o600 });
  await hsm.importKek({ label, value });
  return value;
}
