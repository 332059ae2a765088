/**
 * Control-plane operations the data plane needed (ListCertificatesByCA, DeleteCACertificate,
 * DeleteRegistrationCode, RegisterCertificate's PENDING_ACTIVATION refusal), checked with AWS
 * CLI v2 (/usr/bin/aws); and the regression test of issue 16's fault 6 (an IoT request body
 * over 1 MiB got a connection reset instead of an error).
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/home.js';
import { KEY, SECRET } from './emulator-helpers.js';
import { makeCa, makeLeaf, registerCa, startStandIn, uniq, type StandIn } from './mqtt-helpers.js';

let s: StandIn;
let dir: string;

beforeAll(async () => {
  dir = tempDir('provline-mqtt-cp-');
  s = await startStandIn(join(dir, 'state'));
});

afterAll(async () => {
  await s?.stop();
});

interface CliResult {
  code: number;
  out: Record<string, unknown>;
  stderr: string;
}

function aws(args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      '/usr/bin/aws',
      ['iot', ...args, '--endpoint-url', s.iotUrl, '--region', 'us-east-1', '--output', 'json'],
      {
        env: {
          ...process.env,
          AWS_ACCESS_KEY_ID: KEY,
          AWS_SECRET_ACCESS_KEY: SECRET,
          AWS_CONFIG_FILE: '/dev/null',
          AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
          AWS_MAX_ATTEMPTS: '1',
        },
        timeout: 60_000,
        maxBuffer: 16 * 1024 * 1024,
      },
      (error, stdout, stderr) => {
        const code = error ? ((error as { code?: number }).code ?? 1) : 0;
        let out: Record<string, unknown>;
        try {
          out = stdout.trim() ? (JSON.parse(stdout) as Record<string, unknown>) : {};
        } catch {
          out = {};
        }
        resolve({ code, out, stderr });
      },
    );
  });
}

describe('control-plane operations, with AWS CLI v2', () => {
  it('list-certificates-by-ca lists what registered under the CA', async () => {
    const ca = makeCa(uniq('cp-ca'));
    const caId = await registerCa(s, ca, { autoRegistration: false });
    const leaf = makeLeaf(ca, [['CN', 'listed']], dir);
    const file = join(dir, 'listed.pem');
    writeFileSync(file, leaf.certPem);
    const caFile = join(dir, 'listed-ca.pem');
    writeFileSync(caFile, ca.pem);
    const reg = await aws([
      'register-certificate',
      '--certificate-pem',
      `file://${file}`,
      '--ca-certificate-pem',
      `file://${caFile}`,
      '--set-as-active',
    ]);
    expect(reg.code).toBe(0);
    const listed = await aws(['list-certificates-by-ca', '--ca-certificate-id', caId]);
    expect(listed.code).toBe(0);
    expect(
      (listed.out.certificates as Array<{ certificateId: string; status: string }>).map((c) => [
        c.certificateId,
        c.status,
      ]),
    ).toEqual([[leaf.certificateId, 'ACTIVE']]);
  });

  it('register-certificate --status PENDING_ACTIVATION is refused with 406 CertificateStateException (as measured on AWS)', async () => {
    const ca = makeCa(uniq('cp-pending'));
    await registerCa(s, ca, { autoRegistration: false });
    const leaf = makeLeaf(ca, [['CN', 'pending']], dir);
    const file = join(dir, 'pending.pem');
    writeFileSync(file, leaf.certPem);
    const r = await aws([
      'register-certificate',
      '--certificate-pem',
      `file://${file}`,
      '--status',
      'PENDING_ACTIVATION',
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(
      /CertificateStateException.*Not allowed to register certificate with PENDING_ACTIVATION status/,
    );
  });

  it('delete-ca-certificate is refused while ACTIVE (406), works once INACTIVE', async () => {
    const ca = makeCa(uniq('cp-del'));
    const caId = await registerCa(s, ca);
    const refused = await aws(['delete-ca-certificate', '--certificate-id', caId]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/CertificateStateException/);
    expect(
      (await aws(['update-ca-certificate', '--certificate-id', caId, '--new-status', 'INACTIVE'])).code,
    ).toBe(0);
    expect((await aws(['delete-ca-certificate', '--certificate-id', caId])).code).toBe(0);
    const gone = await aws(['describe-ca-certificate', '--certificate-id', caId]);
    expect(gone.stderr).toMatch(/ResourceNotFoundException/);
  });

  it('delete-registration-code: the next get-registration-code makes a new code', async () => {
    const first = await aws(['get-registration-code']);
    expect(first.out.registrationCode).toMatch(/^[0-9a-f]{64}$/);
    expect((await aws(['delete-registration-code'])).code).toBe(0);
    const second = await aws(['get-registration-code']);
    expect(second.out.registrationCode).toMatch(/^[0-9a-f]{64}$/);
    expect(second.out.registrationCode).not.toBe(first.out.registrationCode);
    expect((await aws(['get-registration-code'])).out.registrationCode).toBe(second.out.registrationCode);
  });
});

describe('issue 16 fault 6: an IoT request body over 1 MiB', () => {
  it('gets 413 RequestEntityTooLargeException, not a connection reset (raw HTTP client)', async () => {
    const body = Buffer.alloc(2 * 1024 * 1024, 0x20);
    const url = new URL(`${s.iotUrl}/policies/huge`);
    const res = await new Promise<{ status: number; headers: Record<string, unknown>; text: string }>(
      (resolve, reject) => {
        const req = request(
          {
            host: url.hostname,
            port: url.port,
            path: url.pathname,
            method: 'POST',
            headers: { 'content-type': 'application/json', 'content-length': body.length },
          },
          (r) => {
            let text = '';
            r.on('data', (d: Buffer) => (text += d.toString()));
            r.on('end', () => resolve({ status: r.statusCode ?? 0, headers: r.headers, text }));
          },
        );
        req.on('error', reject);
        req.end(body);
      },
    );
    expect(res.status).toBe(413);
    expect(res.headers['x-amzn-errortype']).toBe('RequestEntityTooLargeException');
    expect(res.headers.connection).toBe('close');
    expect(JSON.parse(res.text)).toEqual({
      message: 'The request body (2097152 bytes) is larger than the limit of 1048576 bytes.',
    });
  });

  it('AWS CLI v2 reads the error instead of a reset', async () => {
    const file = join(dir, 'huge-policy.json');
    writeFileSync(file, JSON.stringify({ Version: '2012-10-17', Statement: [], pad: 'x'.repeat(1_200_000) }));
    const r = await aws([
      'create-policy',
      '--policy-name',
      uniq('huge'),
      '--policy-document',
      `file://${file}`,
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/RequestEntityTooLarge/);
    expect(r.stderr).not.toMatch(/reset|Connection aborted/i);
  });
});
