/**
 * Fleet-provisioning benchmark: full flows per second against the stand-in running as its own
 * process (as `stack up` runs it). One flow is what a device does on its first boot: a mutual-
 * TLS connect with the claim certificate, CONNECT, SUBSCRIBE to the answer topics,
 * CreateCertificateFromCsr (its own P-256 key, made before timing, as on a device), RegisterThing
 * with a serial number (thing + certificate ACTIVE + policy), DISCONNECT. N clients run flows
 * in parallel, in rounds that alternate a template without a hook and one whose
 * pre-provisioning hook is provline's own (src/cloud/hook behind its local runner): each request
 * looks its serial and lot up in a signed lot allow-list in the stand-in's S3 (cached by the
 * hook), is allowed once by a conditional S3 write, and gets the row's parameters as overrides.
 *
 * The physical limit measured in the same run: bare TLS 1.3 handshakes per second with the
 * same client certificate, against a bare Node TLS server (in a process of its own) with the
 * stand-in's server key, with the same N clients. A flow includes one such handshake.
 *
 * Prints one JSON object: flows/s without and with the hook, their ratio (goal ≥ 0.8), the
 * handshake rate and flows per handshake; goals: ≥ 200 flows/s without the hook. It also
 * reads the stand-in's CPU time per flow from /proc (and the bare server's per handshake),
 * which a machine shared with other work disturbs far less than wall-clock rates, and the
 * load average, so a reader can tell a slow machine from a slow stand-in.
 *
 *   npm run bench:fleet [-- --flows 2000 --clients 8 --rounds 2]
 */
import 'reflect-metadata';
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import {
  AttachPolicyCommand,
  CreateKeysAndCertificateCommand,
  CreatePolicyCommand,
  CreateProvisioningTemplateCommand,
  IoTClient,
} from '@aws-sdk/client-iot';
import mqtt, { type Packet } from 'mqtt-packet';
import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import {
  hookKeys,
  iotCertificateStatus,
  keyIdOf,
  makeHandler,
  mapInStandIn,
  rowsDigest,
  sealAllowList,
  startHookRunner,
  type AllowList,
  type HookRunner,
} from '../src/cloud/hook/index.js';
import { packageRoot } from '../src/core/index.js';
import { csr } from './csr.js';

const TARGET_FLOWS_PER_SECOND = 200;
const TARGET_HOOK_RATIO = 0.8;
const KEY = 'AKIABENCHPROVLINE002';
const SECRET = 'bench-secret-fleet-0123456789';
const ACCOUNT = 'arn:aws:iot:us-east-1:123456789012';
const HOOK_ARN = 'arn:aws:lambda:us-east-1:123456789012:function:bench-hook';
const BUCKET = 'bench-claims';
const HOOK_PREFIX = 'provline/claims';
/** Per-step budget of one flow's step; a flow that exceeds it fails the bench. */
const STEP_MS = 30_000;

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

interface Ready {
  iotUrl: string;
  s3Url: string;
  mqttEndpoint: string;
  rootCaFile: string;
}

interface Credentials {
  cert: string;
  key: string;
  ca: string;
  host: string;
  port: number;
}

function startProcess(
  args: string[],
  env: NodeJS.ProcessEnv,
): { child: ChildProcess; firstLine: Promise<string> } {
  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'inherit'] });
  const firstLine = new Promise<string>((resolve, reject) => {
    let out = '';
    child.once('exit', (c) => reject(new Error(`${args[0]} exited with ${c}`)));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(out.slice(0, nl));
    });
  });
  return { child, firstLine };
}

function tlsConnect(c: Credentials): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: c.host,
      port: c.port,
      servername: 'localhost',
      cert: c.cert,
      key: c.key,
      ca: c.ca,
      ALPNProtocols: ['x-amzn-mqtt-ca'],
    });
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** A minimal MQTT 3.1.1 client on mqtt-packet: enough for one provisioning flow. */
class FlowClient {
  private readonly parser = mqtt.parser({ protocolVersion: 4 });
  private waiting: { match: (p: Packet) => boolean; resolve: (p: Packet) => void } | undefined;
  private readonly backlog: Packet[] = [];
  private nextId = 1;

  constructor(private readonly socket: TLSSocket) {
    this.parser.on('packet', (p: Packet) => {
      if (p.cmd === 'publish' && p.qos === 1) this.send({ cmd: 'puback', messageId: p.messageId! });
      if (this.waiting?.match(p)) {
        const w = this.waiting;
        this.waiting = undefined;
        w.resolve(p);
      } else this.backlog.push(p);
    });
    socket.on('data', (d: Buffer) => this.parser.parse(d));
  }

  send(p: Packet): void {
    this.socket.write(mqtt.generate(p, { protocolVersion: 4 }));
  }

  wait(what: string, match: (p: Packet) => boolean): Promise<Packet> {
    const i = this.backlog.findIndex(match);
    if (i >= 0) return Promise.resolve(this.backlog.splice(i, 1)[0]!);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${what}: nothing within ${STEP_MS} ms`)), STEP_MS);
      const closed = (): void => reject(new Error(`${what}: the connection closed`));
      this.socket.once('close', closed);
      this.waiting = {
        match,
        resolve: (p) => {
          clearTimeout(timer);
          this.socket.off('close', closed);
          resolve(p);
        },
      };
    });
  }

  /** Publishes `payload` on `topic` and returns the JSON of the answer on `<topic>/accepted`. */
  async request(topic: string, payload: object): Promise<Record<string, unknown>> {
    this.send({
      cmd: 'publish',
      topic,
      payload: Buffer.from(JSON.stringify(payload)),
      qos: 1,
      messageId: this.nextId++,
      retain: false,
      dup: false,
    });
    const answer = (await this.wait(
      topic,
      (p) => p.cmd === 'publish' && p.topic.startsWith(`${topic}/`),
    )) as mqtt.IPublishPacket;
    const body = JSON.parse(answer.payload.toString()) as Record<string, unknown>;
    if (!answer.topic.endsWith('/accepted')) throw new Error(`${topic} rejected: ${JSON.stringify(body)}`);
    return body;
  }
}

/** One device's first boot, from TLS connect to DISCONNECT. */
async function flow(c: Credentials, template: string, deviceCsr: string, serial: string): Promise<void> {
  const socket = await tlsConnect(c);
  try {
    const client = new FlowClient(socket);
    client.send({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 4,
      clean: true,
      clientId: `bench-${serial}`,
      keepalive: 60,
    });
    await client.wait('CONNACK', (p) => p.cmd === 'connack');
    client.send({
      cmd: 'subscribe',
      messageId: 1,
      subscriptions: [
        { topic: '$aws/certificates/create-from-csr/json/+', qos: 1 },
        { topic: `$aws/provisioning-templates/${template}/provision/json/+`, qos: 1 },
      ],
    });
    await client.wait('SUBACK', (p) => p.cmd === 'suback');
    const created = await client.request('$aws/certificates/create-from-csr/json', {
      certificateSigningRequest: deviceCsr,
    });
    await client.request(`$aws/provisioning-templates/${template}/provision/json`, {
      certificateOwnershipToken: created.certificateOwnershipToken,
      parameters: { SerialNumber: serial, LotId: 'bench' },
    });
    client.send({ cmd: 'disconnect' });
  } finally {
    socket.end();
  }
}

/** CPU seconds (user + system) a process has used so far, from /proc (Linux). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  // utime and stime are fields 14 and 15 of stat(5), in clock ticks (100 per second on Linux).
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Runs `total` jobs with `clients` in parallel; returns the seconds it took. */
async function parallel(total: number, clients: number, job: (i: number) => Promise<void>): Promise<number> {
  let next = 0;
  const started = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (next < total) await job(next++);
    }),
  );
  return Number(process.hrtime.bigint() - started) / 1e9;
}

/** A bare TLS server (same key, same client-certificate check) in a process of its own. */
const RAW_SERVER = `
const tls = require('node:tls'); const fs = require('node:fs');
const [key, cert, ca] = process.argv.slice(1).map((f) => fs.readFileSync(f));
const s = tls.createServer({ key, cert, ca, requestCert: true, rejectUnauthorized: true, ALPNProtocols: ['x-amzn-mqtt-ca'] },
  (socket) => { socket.on('error', () => {}); socket.end(); });
s.listen(0, '127.0.0.1', () => process.stdout.write(JSON.stringify({ port: s.address().port }) + '\\n'));
`;

async function main(): Promise<void> {
  const flowsPerPhase = arg('flows', 1000);
  const clients = arg('clients', 8);
  const rounds = arg('rounds', 2);
  const dir = mkdtempSync(join(tmpdir(), 'provline-bench-fleet-'));
  const standIn = startProcess(
    [
      // BENCH_PROF=<dir> writes a CPU profile of the stand-in there.
      ...(process.env.BENCH_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROF}`] : []),
      join(packageRoot(), 'dist/workers/emulator.js'),
      '--state-dir',
      join(dir, 'state'),
      '--fsync',
      'interval',
    ],
    { ...process.env, AWS_ACCESS_KEY_ID: KEY, AWS_SECRET_ACCESS_KEY: SECRET },
  );
  let raw: ChildProcess | undefined;
  let hook: HookRunner | undefined;
  let s3: S3Client | undefined;
  let iotForHook: IoTClient | undefined;
  try {
    const ready = JSON.parse(await standIn.firstLine) as Ready;
    // provline's own pre-provisioning hook (src/cloud/hook), reading a signed allow-list of the
    // hook phases' serials from the stand-in's S3 and marking each serial used with a
    // conditional write, as in production. A software key signs the allow-list here (the HSM
    // signs it once per lot at submit; it is not on the hook's path).
    s3 = new S3Client({
      endpoint: ready.s3Url,
      region: 'us-east-1',
      forcePathStyle: true,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      credentials: { accessKeyId: KEY, secretAccessKey: SECRET },
    });
    await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
    const signing = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const devices: AllowList['devices'] = {};
    for (let r = 0; r < rounds; r++)
      for (let i = 0; i < flowsPerPhase; i++)
        devices[`h${r}-${i}`] = { thingName: `hook-h${r}-${i}`, parameters: { SerialNumber: `h${r}-${i}` } };
    const list: AllowList = {
      version: 1,
      templateName: 'bench-hook',
      batchId: 'bench',
      profile: 'bench',
      createdAt: new Date().toISOString(),
      serialParameter: 'SerialNumber',
      lotParameter: 'LotId',
      rowsSha256: rowsDigest(devices),
      devices,
    };
    const keyId = keyIdOf(signing.publicKey);
    const sealed = await sealAllowList(list, keyId, (data) =>
      Promise.resolve(sign('sha256', data, { key: signing.privateKey, dsaEncoding: 'ieee-p1363' })),
    );
    await s3.send(
      new PutObjectCommand({
        Bucket: BUCKET,
        Key: hookKeys.lot(HOOK_PREFIX, 'bench-hook', 'bench'),
        Body: JSON.stringify(sealed),
      }),
    );
    iotForHook = new IoTClient({
      endpoint: ready.iotUrl,
      region: 'us-east-1',
      credentials: { accessKeyId: KEY, secretAccessKey: SECRET },
    });
    hook = await startHookRunner(
      makeHandler({
        s3,
        certificateStatus: iotCertificateStatus(iotForHook),
        bucket: BUCKET,
        prefix: HOOK_PREFIX,
        trusted: new Map([[keyId, signing.publicKey]]),
      }),
    );
    await mapInStandIn(ready.iotUrl, HOOK_ARN, hook.url);
    const iot = new IoTClient({
      endpoint: ready.iotUrl,
      region: 'us-east-1',
      credentials: { accessKeyId: KEY, secretAccessKey: SECRET },
    });
    const topics = ['$aws/certificates/create-from-csr/*', '$aws/provisioning-templates/*'];
    await iot.send(
      new CreatePolicyCommand({
        policyName: 'claim',
        policyDocument: JSON.stringify({
          Version: '2012-10-17',
          Statement: [
            { Effect: 'Allow', Action: 'iot:Connect', Resource: '*' },
            {
              Effect: 'Allow',
              Action: ['iot:Publish', 'iot:Receive'],
              Resource: topics.map((t) => `${ACCOUNT}:topic/${t}`),
            },
            {
              Effect: 'Allow',
              Action: 'iot:Subscribe',
              Resource: topics.map((t) => `${ACCOUNT}:topicfilter/${t}`),
            },
          ],
        }),
      }),
    );
    await iot.send(
      new CreatePolicyCommand({
        policyName: 'device',
        policyDocument: JSON.stringify({
          Version: '2012-10-17',
          Statement: [{ Effect: 'Allow', Action: 'iot:Connect', Resource: '*' }],
        }),
      }),
    );
    const claim = await iot.send(new CreateKeysAndCertificateCommand({ setAsActive: true }));
    await iot.send(new AttachPolicyCommand({ policyName: 'claim', target: claim.certificateArn! }));
    const body = (prefix: string): string =>
      JSON.stringify({
        Parameters: { SerialNumber: { Type: 'String' } },
        Resources: {
          thing: {
            Type: 'AWS::IoT::Thing',
            Properties: { ThingName: { 'Fn::Join': ['', [prefix, { Ref: 'SerialNumber' }]] } },
          },
          certificate: {
            Type: 'AWS::IoT::Certificate',
            Properties: { CertificateId: { Ref: 'AWS::IoT::Certificate::Id' }, Status: 'Active' },
          },
          policy: { Type: 'AWS::IoT::Policy', Properties: { PolicyName: 'device' } },
        },
      });
    const templates = { plain: 'bench-plain', hook: 'bench-hook' } as const;
    for (const [kind, name] of Object.entries(templates))
      await iot.send(
        new CreateProvisioningTemplateCommand({
          templateName: name,
          templateBody: body(`${kind}-`),
          provisioningRoleArn: 'arn:aws:iam::123456789012:role/bench',
          enabled: true,
          ...(kind === 'hook' ? { preProvisioningHook: { targetArn: HOOK_ARN } } : {}),
        }),
      );
    iot.destroy();

    const [host, port] = ready.mqttEndpoint.split(':');
    const creds: Credentials = {
      cert: claim.certificatePem!,
      key: claim.keyPair!.PrivateKey!,
      ca: readFileSync(ready.rootCaFile, 'utf8'),
      host: host!,
      port: Number(port),
    };
    // Devices make their keys before they boot: CSRs are not part of the timed flow.
    const csrs = Array.from({ length: flowsPerPhase }, (_, i) => csr(`device-${i}`));

    const totals = {
      plain: { flows: 0, seconds: 0, serverCpuSeconds: 0 },
      hook: { flows: 0, seconds: 0, serverCpuSeconds: 0 },
    };
    const standInPid = standIn.child.pid!;
    let serial = 0;
    // Warm-up: JIT, keep-alive pools, the stand-in's caches.
    await parallel(Math.min(50, flowsPerPhase), clients, (i) =>
      flow(creds, templates.plain, csrs[i]!, `w${serial++}`),
    );
    for (let r = 0; r < rounds; r++) {
      for (const kind of r % 2 === 0 ? (['plain', 'hook'] as const) : (['hook', 'plain'] as const)) {
        const cpu = cpuSeconds(standInPid);
        const seconds = await parallel(flowsPerPhase, clients, (i) =>
          flow(creds, templates[kind], csrs[i]!, kind === 'hook' ? `h${r}-${i}` : `p${r}-${i}`),
        );
        totals[kind].serverCpuSeconds += cpuSeconds(standInPid) - cpu;
        totals[kind].flows += flowsPerPhase;
        totals[kind].seconds += seconds;
      }
    }

    const state = join(dir, 'state', 'ca');
    const rawServer = startProcess(
      [
        '-e',
        RAW_SERVER,
        join(state, 'server.key.pem'),
        join(state, 'server.cert.pem'),
        join(state, 'device-ca.cert.pem'),
      ],
      process.env,
    );
    raw = rawServer.child;
    const rawPort = (JSON.parse(await rawServer.firstLine) as { port: number }).port;
    const handshakes = flowsPerPhase;
    const rawCpu = cpuSeconds(raw.pid!);
    const rawSeconds = await parallel(handshakes, clients, async () => {
      const socket = await tlsConnect({ ...creds, host: '127.0.0.1', port: rawPort });
      await new Promise<void>((r) => {
        socket.once('end', () => r());
        socket.once('close', () => r());
        socket.resume();
      });
      socket.destroy();
    });

    const rawCpuMs = ((cpuSeconds(raw.pid!) - rawCpu) * 1000) / handshakes;
    const cpuMs = (t: { flows: number; serverCpuSeconds: number }): number =>
      Math.round(((t.serverCpuSeconds * 1000) / t.flows) * 100) / 100;
    const rate = (t: { flows: number; seconds: number }): number =>
      Math.round((t.flows / t.seconds) * 10) / 10;
    const plain = rate(totals.plain);
    const withHook = rate(totals.hook);
    const rawRate = Math.round((handshakes / rawSeconds) * 10) / 10;
    const hookRatio = Math.round((withHook / plain) * 1000) / 1000;
    process.stdout.write(
      `${JSON.stringify(
        {
          bench: 'fleet',
          clients,
          rounds,
          flowsPerPhase,
          withoutHook: { ...totals.plain, flowsPerSecond: plain, standInCpuMsPerFlow: cpuMs(totals.plain) },
          withHook: { ...totals.hook, flowsPerSecond: withHook, standInCpuMsPerFlow: cpuMs(totals.hook) },
          hookRatio,
          /** The same ratio from the stand-in's CPU time per flow: steadier on a shared machine. */
          hookCpuRatio: Math.round((cpuMs(totals.plain) / cpuMs(totals.hook)) * 1000) / 1000,
          rawTlsHandshakesPerSecond: rawRate,
          rawServerCpuMsPerHandshake: Math.round(rawCpuMs * 100) / 100,
          /** What one idle core of the stand-in could sustain, from its CPU time per flow. */
          standInFlowsPerCpuSecond: Math.round(1000 / cpuMs(totals.plain)),
          loadAverage: loadavg().map((l) => Math.round(l * 100) / 100),
          flowsPerHandshakeRatio: Math.round((plain / rawRate) * 1000) / 1000,
          targets: { flowsPerSecond: TARGET_FLOWS_PER_SECOND, hookRatio: TARGET_HOOK_RATIO },
          meetsTarget: plain >= TARGET_FLOWS_PER_SECOND && hookRatio >= TARGET_HOOK_RATIO,
        },
        null,
        2,
      )}\n`,
    );
  } finally {
    raw?.kill('SIGTERM');
    standIn.child.kill('SIGTERM');
    await hook?.close();
    s3?.destroy();
    iotForHook?.destroy();
    await new Promise((r) => standIn.child.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:fleet: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
