/**
 * MQTT endpoint benchmark: mutual-TLS connects per second against the stand-in (TLS
 * handshake with a client certificate, CONNECT, the registry and policy checks, CONNACK,
 * DISCONNECT), compared in the same run with the physical limit — the raw handshake rate of a
 * bare node:tls server using the same server certificate and client certificates, also in a
 * process of its own. Several connections run in parallel. Prints one JSON object with both
 * rates and their ratio (goal ≥ 0.5).
 *
 *   npm run bench:mqtt [-- --seconds 5 --parallel 8 --devices 8]
 *
 * Hook: `EXTRA_FIGURES` below is where further data-plane figures (fleet-provisioning flows per
 * second, bench/fleet.ts) can be added to the same report.
 */
import 'reflect-metadata';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AttachPolicyCommand,
  CreateKeysAndCertificateCommand,
  CreatePolicyCommand,
  IoTClient,
} from '@aws-sdk/client-iot';
import mqttPacket from 'mqtt-packet';
import { packageRoot } from '../src/core/index.js';

const GOAL = 0.5;
const KEY = 'AKIABENCHPROVLINE001';
const SECRET = 'bench-secret-0123456789';

/** Further figures for the report (name → async producer); empty until someone adds one. */
const EXTRA_FIGURES: Record<string, () => Promise<unknown>> = {};

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

interface Client {
  cert: string;
  key: string;
}

interface Target {
  host: string;
  port: number;
  ca: Buffer;
}

/** Runs `one` with `parallel` workers for `seconds`; returns completed operations per second. */
async function rate(
  seconds: number,
  parallel: number,
  one: (i: number) => Promise<void>,
): Promise<{ perSecond: number; count: number; failures: number }> {
  const end = Date.now() + seconds * 1000;
  let count = 0;
  let failures = 0;
  const started = Date.now();
  await Promise.all(
    Array.from({ length: parallel }, async (_, w) => {
      let i = w;
      while (Date.now() < end) {
        try {
          await one(i);
          count++;
        } catch {
          failures++;
        }
        i += parallel;
      }
    }),
  );
  return { perSecond: count / ((Date.now() - started) / 1000), count, failures };
}

/** TLS handshake with the client certificate, then close (the bare server's work). */
function handshake(t: Target, c: Client): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = tlsConnect({
      host: t.host,
      port: t.port,
      ca: t.ca,
      cert: c.cert,
      key: c.key,
      servername: 'localhost',
    });
    sock.once('secureConnect', () => {
      sock.destroy();
      resolve();
    });
    sock.once('error', reject);
  });
}

/** Handshake, CONNECT, wait for CONNACK 0, DISCONNECT. */
function mqttConnect(t: Target, c: Client, clientId: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = tlsConnect({
      host: t.host,
      port: t.port,
      ca: t.ca,
      cert: c.cert,
      key: c.key,
      servername: 'localhost',
    });
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    parser.on('packet', (p: mqttPacket.Packet) => {
      if (p.cmd === 'connack' && p.returnCode === 0) {
        sock.end(mqttPacket.generate({ cmd: 'disconnect' }, { protocolVersion: 4 }));
        resolve();
      } else reject(new Error(`unexpected ${p.cmd}`));
    });
    sock.on('data', (d: Buffer) => parser.parse(d));
    sock.once('secureConnect', () =>
      sock.write(
        mqttPacket.generate(
          { cmd: 'connect', clientId, protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 60 },
          { protocolVersion: 4 },
        ),
      ),
    );
    sock.once('error', reject);
    sock.once('close', () => reject(new Error('closed before CONNACK')));
  });
}

/** The bare server: `node dist/bench/mqtt.js --raw-server <stateDir>` prints its port. */
function rawServer(stateDir: string): void {
  const server = createServer({
    key: readFileSync(join(stateDir, 'ca', 'server.key.pem')),
    cert: readFileSync(join(stateDir, 'ca', 'server.cert.pem')),
    ca: readFileSync(join(stateDir, 'ca', 'device-ca.cert.pem')),
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: 'TLSv1.2',
  });
  server.on('secureConnection', (s) => {
    // Look at the client certificate as the broker does, then close.
    s.getPeerX509Certificate();
    s.destroy();
  });
  server.on('tlsClientError', () => undefined);
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`${(server.address() as { port: number }).port}\n`);
  });
}

function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    child.once('exit', (code) => reject(new Error(`child exited with ${code}`)));
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(out.slice(0, nl));
    });
  });
}

async function main(): Promise<void> {
  const seconds = arg('seconds', 5);
  const parallel = arg('parallel', 8);
  const devices = arg('devices', 8);
  const dir = mkdtempSync(join(tmpdir(), 'provline-bench-mqtt-'));
  const script = join(packageRoot(), 'dist', 'workers', 'emulator.js');
  const standIn = spawn(process.execPath, [script, '--state-dir', join(dir, 'state'), '--fsync', 'never'], {
    env: { ...process.env, AWS_ACCESS_KEY_ID: KEY, AWS_SECRET_ACCESS_KEY: SECRET },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let raw: ChildProcess | undefined;
  try {
    const ready = JSON.parse(await firstLine(standIn)) as {
      iotUrl: string;
      mqttEndpoint: string;
      rootCaFile: string;
    };
    const iot = new IoTClient({
      endpoint: ready.iotUrl,
      region: 'us-east-1',
      credentials: { accessKeyId: KEY, secretAccessKey: SECRET },
    });
    await iot.send(
      new CreatePolicyCommand({
        policyName: 'bench',
        policyDocument: JSON.stringify({
          Version: '2012-10-17',
          Statement: [
            {
              Effect: 'Allow',
              Action: 'iot:Connect',
              Resource: 'arn:aws:iot:us-east-1:123456789012:client/bench-*',
            },
          ],
        }),
      }),
    );
    const clients: Client[] = [];
    for (let i = 0; i < devices; i++) {
      const c = await iot.send(new CreateKeysAndCertificateCommand({ setAsActive: true }));
      await iot.send(new AttachPolicyCommand({ policyName: 'bench', target: c.certificateArn! }));
      clients.push({ cert: c.certificatePem!, key: c.keyPair!.PrivateKey! });
    }
    const ca = readFileSync(ready.rootCaFile);
    const broker: Target = { host: '127.0.0.1', port: Number(ready.mqttEndpoint.split(':')[1]), ca };
    raw = spawn(process.execPath, [process.argv[1]!, '--raw-server', join(dir, 'state')], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const bare: Target = { host: '127.0.0.1', port: Number(await firstLine(raw)), ca };
    // Warm up both (JIT, session caches), then measure raw first and the stand-in second.
    await rate(1, parallel, (i) => handshake(bare, clients[i % devices]!));
    await rate(1, parallel, (i) => mqttConnect(broker, clients[i % devices]!, `bench-w${i}`));
    const rawRate = await rate(seconds, parallel, (i) => handshake(bare, clients[i % devices]!));
    const connectRate = await rate(seconds, parallel, (i) =>
      mqttConnect(broker, clients[i % devices]!, `bench-${i}`),
    );
    const extra: Record<string, unknown> = {};
    for (const [name, produce] of Object.entries(EXTRA_FIGURES)) extra[name] = await produce();
    const ratio = connectRate.perSecond / rawRate.perSecond;
    process.stdout.write(
      `${JSON.stringify(
        {
          benchmark: 'mqtt',
          seconds,
          parallel,
          devices,
          mtlsConnectsPerSecond: Math.round(connectRate.perSecond),
          rawHandshakesPerSecond: Math.round(rawRate.perSecond),
          ratio: Number(ratio.toFixed(3)),
          goal: GOAL,
          meetsGoal: ratio >= GOAL,
          connects: connectRate.count,
          connectFailures: connectRate.failures,
          handshakes: rawRate.count,
          handshakeFailures: rawRate.failures,
          note: 'connect = mTLS handshake + CONNECT + registry and iot:Connect checks + CONNACK + DISCONNECT; raw = mTLS handshake against a bare node:tls server with the same certificates, in its own process',
          ...extra,
        },
        null,
        2,
      )}\n`,
    );
  } finally {
    raw?.kill('SIGTERM');
    standIn.kill('SIGTERM');
    await new Promise((r) => standIn.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv.includes('--raw-server')) rawServer(process.argv[process.argv.indexOf('--raw-server') + 1]!);
else
  main().catch((e: unknown) => {
    process.stderr.write(`bench:mqtt failed: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
