/** Shared by the emulator*.test.ts files: start the stand-in as a real process, make CSRs. */
import 'reflect-metadata';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { join } from 'node:path';
import { Agent } from 'node:http';
import { IoTClient } from '@aws-sdk/client-iot';
import { S3Client } from '@aws-sdk/client-s3';
import { ROOT } from '../helpers/cli.js';
import { bitString, oid, seq, set, tlv, toPem, utf8, NULL } from '../../src/core/der.js';

export const KEY = 'AKIAPROVLINETEST0001';
export const SECRET = 'provline/test/secret/0123456789abcdefghij';
export const REGION = 'us-east-1';

export interface EmulatorProcess {
  child: ChildProcess;
  iotUrl: string;
  s3Url: string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export function startEmulatorProcess(stateDir: string, extra: string[] = []): Promise<EmulatorProcess> {
  const child = spawn(
    process.execPath,
    [join(ROOT, 'dist/workers/emulator.js'), '--state-dir', stateDir, '--bucket', 'provline-local', ...extra],
    {
      env: { ...process.env, AWS_ACCESS_KEY_ID: KEY, AWS_SECRET_ACCESS_KEY: SECRET },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    let out = '';
    child.once('exit', (code) => reject(new Error(`emulator exited with ${code}: ${err}`)));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      const ready = JSON.parse(out.slice(0, nl)) as { iotUrl: string; s3Url: string };
      child.removeAllListeners('exit');
      resolve({
        child,
        iotUrl: ready.iotUrl,
        s3Url: ready.s3Url,
        stop: (signal = 'SIGTERM') =>
          new Promise<void>((r) => {
            if (child.exitCode !== null || child.signalCode !== null) return r();
            child.once('exit', () => r());
            child.kill(signal);
          }),
      });
    });
  });
}

export function iotClient(url: string, secret = SECRET): IoTClient {
  return new IoTClient({
    endpoint: url,
    region: REGION,
    credentials: { accessKeyId: KEY, secretAccessKey: secret },
    maxAttempts: 1,
    // One connection per request: with no retries, a kept-alive socket that the stand-in closes
    // as idle (Node's 5 s) just as a slow test reuses it would surface as ECONNRESET.
    requestHandler: { httpAgent: new Agent({ keepAlive: false }) },
  });
}

export function s3Client(url: string): S3Client {
  return new S3Client({
    endpoint: url,
    region: REGION,
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    credentials: { accessKeyId: KEY, secretAccessKey: SECRET },
  });
}

export interface TestCsr {
  csr: string;
  publicKeyPem: string;
  /** PKCS#8 PEM of the CSR's key (a test device's own key). */
  privateKeyPem: string;
}

/** A PKCS#10 CSR for a fresh P-256 key (built with the stand-in's DER helpers: fast). */
export function makeCsr(cn: string): TestCsr {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const spki = publicKey.export({ format: 'der', type: 'spki' });
  const info = seq(
    tlv(0x02, Buffer.from([0])),
    seq(set(seq(oid('2.5.4.3'), utf8(cn)))),
    spki,
    tlv(0xa0, Buffer.alloc(0)),
  );
  const der = seq(info, seq(oid('1.2.840.10045.4.3.2')), bitString(sign('sha256', info, privateKey)));
  return {
    csr: toPem(der, 'CERTIFICATE REQUEST'),
    publicKeyPem: publicKey.export({ format: 'pem', type: 'spki' }) as string,
    privateKeyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string,
  };
}

/** An RSA-2048 CSR (sha256WithRSAEncryption). */
export function makeRsaCsr(cn: string): TestCsr {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const spki = publicKey.export({ format: 'der', type: 'spki' });
  const info = seq(
    tlv(0x02, Buffer.from([0])),
    seq(set(seq(oid('2.5.4.3'), utf8(cn)))),
    spki,
    tlv(0xa0, Buffer.alloc(0)),
  );
  const der = seq(info, seq(oid('1.2.840.113549.1.1.11'), NULL), bitString(sign('sha256', info, privateKey)));
  return {
    csr: toPem(der, 'CERTIFICATE REQUEST'),
    publicKeyPem: publicKey.export({ format: 'pem', type: 'spki' }) as string,
    privateKeyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string,
  };
}

export function pemDer(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
