/**
 * Driver-level line-rate benchmark: N simulated devices at a real UART rate (the simulators pace
 * themselves; ptys do not), each written and verified by its driver over its own socat pty.
 * Reports per-device time against the wire limit (bytes that crossed the line ÷ baud/10) and the
 * speed-up of N ports over 1. Prints one JSON object.
 *
 *   node dist/bench/flash.js [--ports 4] [--baud 115200] [--driver provline-serial-v1|nordic-at]
 */
import 'reflect-metadata';
import { X509CertificateGenerator } from '@peculiar/x509';
import { spawn } from 'node:child_process';
import { createCipheriv, randomBytes, webcrypto } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSimulator } from '../devices/index.js';
import type { DriverName } from '../src/config/index.js';
import { stopPid, waitFor } from '../src/core/index.js';
import { createDriver, openTransport, type Credentials } from '../src/flash/index.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : fallback;
}

const EC = { name: 'ECDSA', namedCurve: 'P-256' };
const SIG = { name: 'ECDSA', hash: 'SHA-256' };

async function credentials(driver: DriverName, serial: string, kek: Buffer): Promise<Credentials> {
  const ca = await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify']);
  const root = await X509CertificateGenerator.createSelfSigned({
    name: 'CN=bench root',
    keys: ca,
    signingAlgorithm: SIG,
  });
  const dev = await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify']);
  const cert = await X509CertificateGenerator.create({
    subject: `CN=${serial}`,
    issuer: root.subject,
    publicKey: dev.publicKey,
    signingKey: ca.privateKey,
    signingAlgorithm: SIG,
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', dev.privateKey));
  if (driver === 'nordic-at') {
    const pem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END PRIVATE KEY-----`;
    return { rootCaPem: root.toString('pem'), certificatePem: cert.toString('pem'), privateKeyPem: pem };
  }
  const padded = Buffer.concat([pkcs8, Buffer.alloc((8 - (pkcs8.length % 8)) % 8)]);
  const c = createCipheriv('id-aes256-wrap-pad', kek, Buffer.from('A65959A6', 'hex'));
  return {
    rootCaPem: root.toString('pem'),
    certificatePem: cert.toString('pem'),
    wrappedKey: Buffer.concat([c.update(padded), c.final()]).toString('base64'),
  };
}

interface PortResult {
  ms: number;
  wireBytes: number;
  limitMs: number;
}

async function runPorts(
  dir: string,
  driver: DriverName,
  ports: number,
  baud: number,
  round: number,
): Promise<PortResult[]> {
  return Promise.all(
    Array.from({ length: ports }, async (_, i) => {
      const dev = join(dir, `r${round}p${i}-dev`);
      const host = join(dir, `r${round}p${i}-host`);
      const socat = spawn('setsid', ['socat', `pty,raw,echo=0,link=${dev}`, `pty,raw,echo=0,link=${host}`], {
        stdio: 'ignore',
      });
      socat.unref();
      try {
        await waitFor('socat', () => existsSync(dev) && existsSync(host), 5_000, 10);
        const serial =
          driver === 'nordic-at'
            ? `35265610${String(round * 100 + i).padStart(7, '0')}`
            : `BENCH-${round}-${i}`;
        const kek = randomBytes(32);
        const creds = await credentials(driver, serial, kek);
        const sim = await startSimulator({ driver, port: dev, serial, baudRate: baud, kek });
        const transport = await openTransport(host, { baudRate: baud });
        const d = createDriver({ driver, transport, settings: { secTag: 16842753 } });
        const t0 = performance.now();
        await d.readIdentity();
        const w = await d.writeCredentials(creds);
        const ms = performance.now() - t0;
        if (!w.verify.ok) throw new Error('not verified');
        const wireBytes = sim.host.stats.bytesIn + sim.host.stats.bytesOut;
        await d.close();
        await transport.close();
        await sim.close();
        return { ms, wireBytes, limitMs: (wireBytes / (baud / 10)) * 1000 };
      } finally {
        if (socat.pid) await stopPid(socat.pid, 'socat', 2_000);
      }
    }),
  );
}

async function main(): Promise<void> {
  const ports = Number(arg('ports', '4'));
  const baud = Number(arg('baud', '115200'));
  const drivers = (
    arg('driver', 'all') === 'all' ? ['provline-serial-v1', 'nordic-at'] : [arg('driver', '')]
  ) as DriverName[];
  const dir = mkdtempSync(join(tmpdir(), 'provline-bench-flash-'));
  const out: Record<string, unknown> = { baud, lineRateBytesPerSecond: baud / 10, ports };
  try {
    let round = 0;
    for (const driver of drivers) {
      const one = await runPorts(dir, driver, 1, baud, round++);
      const many = await runPorts(dir, driver, ports, baud, round++);
      const perDevice = (r: PortResult[]): Record<string, number> => {
        const ms = r.reduce((a, b) => a + b.ms, 0) / r.length;
        const limit = r.reduce((a, b) => a + b.limitMs, 0) / r.length;
        return {
          ms: Math.round(ms),
          wireBytes: Math.round(r.reduce((a, b) => a + b.wireBytes, 0) / r.length),
          lineRateLimitMs: Math.round(limit),
          ofLineRate: Number((limit / ms).toFixed(3)),
        };
      };
      out[driver] = {
        onePort: perDevice(one),
        [`${ports}Ports`]: perDevice(many),
        // devices per unit of time with N ports over 1 port: N × t(1) ÷ slowest of the N
        speedUp: Number(((ports * one[0]!.ms) / Math.max(...many.map((r) => r.ms))).toFixed(2)),
      };
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`bench flash: ${String(e)}\n`);
    process.exit(1);
  },
);
