/**
 * The AWS adapter layer (src/cloud) against the stand-in as a real process, through the
 * clients `makeClients` builds from a shared credentials file:
 * - bulk: input + manifest, task start, lookup by input key, polling, reports mapped by
 *   lineNumber (planted failures, throttled lines), the one-task slot, task-level failure;
 * - single: resources, RegisterThing under throttling, crash-recovery lookup by public key;
 * - registry: problems found after deliberate damage, orphans found and removed.
 */
import { X509Certificate, createHash, createPublicKey } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  AttachPolicyCommand,
  AttachThingPrincipalCommand,
  CreateCertificateFromCsrCommand,
  DescribeCertificateCommand,
  DetachPolicyCommand,
  DetachThingPrincipalCommand,
  StopThingRegistrationTaskCommand,
  UpdateCertificateCommand,
} from '@aws-sdk/client-iot';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  findTaskByInputKey,
  putInput,
  readManifest,
  readReports,
  renderInputFile,
  startTask,
  waitTask,
  type TaskDescription,
} from '../../src/cloud/bulk.js';
import { makeClients, requireBucket, requireRoleArn, type CloudClients } from '../../src/cloud/clients.js';
import { checkDevices, findOrphans, removeOrphan } from '../../src/cloud/registry.js';
import { describeDataEndpoint, ensureResources } from '../../src/cloud/resources.js';
import { Pacer, findCertificateForKey, registerThing, type RegisteredThing } from '../../src/cloud/single.js';
import type { AwsSettings } from '../../src/stack/runtime.js';
import { ROOT } from '../helpers/cli.js';
import { tempDir } from '../helpers/home.js';
import {
  KEY,
  REGION,
  SECRET,
  makeCsr,
  startEmulatorProcess,
  type EmulatorProcess,
  type TestCsr,
} from './emulator-helpers.js';

const TEMPLATE = readFileSync(join(ROOT, 'config/templates/demo-bulk.json'), 'utf8');
const POLICY = readFileSync(join(ROOT, 'config/policies/demo-device.json'), 'utf8');
const RESOURCES = {
  policyName: 'provline-demo-device',
  policyDocument: POLICY,
  thingType: 'provline-demo-sensor',
  thingGroups: ['provline-demo'],
};
let emu: EmulatorProcess;
let c: CloudClients;
let bucket: string;
let roleArn: string;
const startedAt = new Date(Date.now() - 60_000);

function settings(over: Partial<AwsSettings>): AwsSettings {
  return {
    region: REGION,
    endpoint: undefined,
    s3Endpoint: undefined,
    credentialsFile: undefined,
    profile: undefined,
    bucket: undefined,
    roleArn: undefined,
    useRealAws: false,
    ...over,
  } as AwsSettings;
}

/** Replaces the stand-in's faults (an empty object clears them). */
async function faults(f: Record<string, unknown>): Promise<void> {
  const res = await fetch(`${emu.iotUrl}/_emulator/faults?replace=true`, {
    method: 'PUT',
    body: JSON.stringify(f),
  });
  expect(res.status).toBe(200);
}

beforeAll(async () => {
  const dir = tempDir('provline-cloud-');
  emu = await startEmulatorProcess(join(dir, 'state'));
  const credentialsFile = join(dir, 'credentials');
  writeFileSync(
    credentialsFile,
    `[provline-test]\naws_access_key_id = ${KEY}\naws_secret_access_key = ${SECRET}\n`,
    {
      mode: 0o600,
    },
  );
  c = makeClients(
    settings({
      endpoint: emu.iotUrl,
      s3Endpoint: emu.s3Url,
      credentialsFile,
      profile: 'provline-test',
      bucket: 'provline-local',
      roleArn: 'arn:aws:iam::123456789012:role/provline-local-registration',
    }),
  );
  bucket = requireBucket(c.aws);
  roleArn = requireRoleArn(c.aws);
  await ensureResources(c, RESOURCES);
});
afterAll(async () => {
  c?.destroy();
  await emu?.stop();
});

interface Chunk {
  key: string;
  serials: string[];
  csrs: TestCsr[];
}

/** Puts a chunk of `n` devices with serials `<prefix>-0001`… as input + manifest. */
async function putChunk(prefix: string, n: number, chunk = 1): Promise<Chunk> {
  const serials = Array.from({ length: n }, (_, i) => `${prefix}-${String(i + 1).padStart(4, '0')}`);
  const csrs = serials.map((s) => makeCsr(s));
  const body = renderInputFile(
    serials.map((s, i) => ({ ThingName: `t-${s}`, SerialNumber: s, CSR: csrs[i]!.csr })),
  );
  const key = `batches/${prefix}/chunk-${chunk}.ndjson`;
  await putInput(c, { bucket, key, body, manifest: { batchId: prefix, chunk, serials } });
  return { key, serials, csrs };
}

const start = (key: string): ReturnType<typeof startTask> =>
  startTask(c, { bucket, key, templateBody: TEMPLATE, roleArn });

async function startedId(key: string): Promise<string> {
  const r = await start(key);
  if (r.status !== 'started') throw new Error(`busy: ${r.message}`);
  return r.taskId;
}

const spki = (pem: string): string =>
  createPublicKey(pem).export({ format: 'der', type: 'spki' }).toString('base64');

describe('bulk registration', () => {
  it('registers 50 devices and maps results and planted failures by lineNumber', async () => {
    await faults({
      failLines: [{ pattern: 'BULK-00(07|33)', error: 'InvalidRequestException', message: 'planted' }],
    });
    const since = new Date(Date.now() - 60_000);
    const chunk = await putChunk('BULK', 50);
    const taskId = await startedId(chunk.key);
    expect(await findTaskByInputKey(c, { bucket, key: chunk.key, since })).toBe(taskId);
    expect(await findTaskByInputKey(c, { bucket, key: 'batches/none.ndjson', since })).toBeUndefined();

    const seen: TaskDescription[] = [];
    const outcome = await waitTask(c, taskId, { onProgress: (d) => seen.push(d), maxDelayMs: 200 });
    expect(outcome).toEqual({ status: 'Completed', successCount: 48, failureCount: 2 });
    expect(seen.at(-1)?.percentageProgress).toBe(100);

    const manifest = await readManifest(c, bucket, chunk.key);
    expect(manifest?.serials).toEqual(chunk.serials);
    const { results, errors } = await readReports(c, taskId);
    expect([...errors.keys()].sort((a, b) => a - b)).toEqual([7, 33]);
    expect(errors.get(7)).toEqual({
      errorName: 'InvalidRequestException',
      message: 'planted',
      retryable: false,
      statusCode: 400,
    });
    expect(results.size).toBe(48);
    for (const [line, r] of results) {
      const serial = manifest!.serials[line - 1]!;
      const cert = new X509Certificate(r.certificatePem);
      expect(cert.publicKey.export({ format: 'der', type: 'spki' }).toString('base64')).toBe(
        spki(chunk.csrs[line - 1]!.publicKeyPem),
      );
      expect(r.certificateId).toBe(createHash('sha256').update(cert.raw).digest('hex'));
      expect(r.certificateArn.endsWith(`:cert/${r.certificateId}`)).toBe(true);
      expect(r.thingArn?.endsWith(`:thing/t-${serial}`)).toBe(true);
    }
  });

  it('reports throttled lines as retryable ThrottlingException', async () => {
    await faults({ throttle: { BulkLine: 0.3 }, seed: 7 });
    const chunk = await putChunk('THR', 20);
    const taskId = await startedId(chunk.key);
    expect((await waitTask(c, taskId, { maxDelayMs: 200 })).status).toBe('Completed');
    const { results, errors } = await readReports(c, taskId);
    expect(results.size + errors.size).toBe(20);
    expect(errors.size).toBeGreaterThan(0);
    for (const e of errors.values())
      expect(e).toMatchObject({ errorName: 'ThrottlingException', retryable: true });
  });

  it('answers busy while another task runs, and started for the running task of the same input', async () => {
    await faults({ linesPerSecond: 20 });
    const slow = await putChunk('SLOW', 40);
    const other = await putChunk('OTHER', 2);
    const taskId = await startedId(slow.key);
    expect(await start(other.key)).toEqual({
      status: 'busy',
      message: expect.stringMatching(/already in progress/),
      runningTaskId: taskId,
    });
    expect(await start(slow.key)).toEqual({ status: 'started', taskId });
    await c.iot.send(new StopThingRegistrationTaskCommand({ taskId }));
    const outcome = await waitTask(c, taskId, { maxDelayMs: 200 });
    expect(outcome.status).toBe('Cancelled');
    expect(outcome.successCount).toBeLessThan(40);
  });

  it('returns Failed with the message for a task-level failure', async () => {
    await faults({ failTask: { message: 'Injected task failure', afterLines: 0 } });
    const chunk = await putChunk('FAIL', 3);
    const outcome = await waitTask(c, await startedId(chunk.key), { maxDelayMs: 200 });
    expect(outcome).toMatchObject({ status: 'Failed', message: 'Injected task failure' });
  });

  it('refuses bad input, bad templates and unknown tasks with stable codes', async () => {
    await faults({});
    expect(await readManifest(c, bucket, 'batches/none.ndjson')).toBeUndefined();
    await expect(
      putInput(c, {
        bucket,
        key: 'bad.ndjson',
        body: Buffer.from('{"a":"1"}\n\n'),
        manifest: { batchId: 'b', chunk: 1, serials: ['x', 'y'] },
      }),
    ).rejects.toMatchObject({ code: 'REGISTRATION_INPUT_INVALID' });
    await expect(
      startTask(c, { bucket, key: 'x.ndjson', templateBody: '{"Resources":', roleArn }),
    ).rejects.toMatchObject({ code: 'REGISTRATION_TASK_REJECTED', retryable: false });
    await expect(waitTask(c, '00000000-0000-4000-8000-000000000000')).rejects.toMatchObject({
      code: 'REGISTRATION_TASK_NOT_FOUND',
    });
  });
});

interface Device {
  serial: string;
  thingName: string;
  csr: TestCsr;
  reg: RegisteredThing;
}

const pacer = new Pacer({ perSecond: 200, burst: 10 });

/** Registers `n` devices through RegisterThing, concurrently. */
function registerDevices(prefix: string, n: number): Promise<Device[]> {
  return Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const serial = `${prefix}-${i + 1}`;
      const thingName = `t-${serial}`;
      const csr = makeCsr(serial);
      const parameters = { ThingName: thingName, SerialNumber: serial, CSR: csr.csr };
      const reg = await registerThing(c, { templateBody: TEMPLATE, parameters, pacer });
      return { serial, thingName, csr, reg };
    }),
  );
}

const recorded = (
  d: Device,
): { serial: string; thingName: string; certificateId: string; policyName: string } => ({
  serial: d.serial,
  thingName: d.thingName,
  certificateId: d.reg.certificateId,
  policyName: RESOURCES.policyName,
});

describe('clients and resources', () => {
  it('refuses to run without an endpoint, a bucket or a role', () => {
    expect(() => makeClients(settings({}))).toThrow(expect.objectContaining({ code: 'AWS_NOT_CONFIGURED' }));
    expect(() => requireBucket(settings({}))).toThrow(
      expect.objectContaining({ code: 'AWS_NOT_CONFIGURED' }),
    );
    expect(() => requireRoleArn(settings({ useRealAws: true }))).toThrow(
      expect.objectContaining({ code: 'AWS_NOT_CONFIGURED', hint: expect.stringMatching(/aws\.roleArn/) }),
    );
    makeClients(settings({ useRealAws: true })).destroy();
  });

  it('creates only what is missing, and refuses a policy with another document', async () => {
    expect(await ensureResources(c, { ...RESOURCES, thingGroups: ['provline-demo', 'line-2'] })).toEqual({
      created: ['thing-group/line-2'],
    });
    const reformatted = JSON.stringify(JSON.parse(POLICY), null, 4);
    expect(await ensureResources(c, { ...RESOURCES, policyDocument: reformatted })).toEqual({ created: [] });
    await expect(
      ensureResources(c, { ...RESOURCES, policyDocument: '{"Version":"2012-10-17","Statement":[]}' }),
    ).rejects.toMatchObject({ code: 'POLICY_MISMATCH' });
    await expect(ensureResources(c, { policyName: 'nope', thingGroups: [] })).rejects.toMatchObject({
      code: 'POLICY_NOT_FOUND',
    });
    // The stand-in names its own MQTT endpoint (AWS answers <prefix>-ats.iot.<region>.amazonaws.com).
    expect(await describeDataEndpoint(c)).toMatch(/^localhost:\d+$/);
  });
});

describe('single registration', () => {
  it('registers every device while 30 % of RegisterThing calls are throttled', async () => {
    let throttled = 0;
    c.iot.middlewareStack.add(
      (next) => (args) =>
        next(args).catch((e: unknown) => {
          if ((e as Error).name === 'ThrottlingException') throttled++;
          throw e;
        }),
      { step: 'initialize', name: 'countThrottles' },
    );
    await faults({ throttle: { RegisterThing: 0.3 }, seed: 1 });
    const devices = await registerDevices('ONE', 12).finally(() =>
      c.iot.middlewareStack.remove('countThrottles'),
    );
    await faults({});
    expect(throttled).toBeGreaterThan(0);
    for (const d of devices) {
      expect(d.reg.certificateArn.endsWith(`:cert/${d.reg.certificateId}`)).toBe(true);
      expect(d.reg.thingArn?.endsWith(`:thing/${d.thingName}`)).toBe(true);
    }
  });

  it('reports throttling beyond the attempts as retryable, template failures as not', async () => {
    await faults({ throttle: { RegisterThing: 1 } });
    const parameters = { ThingName: 't-x', SerialNumber: 'x', CSR: makeCsr('x').csr };
    await expect(
      registerThing(c, { templateBody: TEMPLATE, parameters, pacer, maxAttempts: 2 }),
    ).rejects.toMatchObject({
      code: 'REGISTRATION_REJECTED',
      retryable: true,
      details: { errorName: 'ThrottlingException' },
    });
    await faults({});
    const wrongType = TEMPLATE.replace('provline-demo-sensor', 'no-such-type');
    await expect(registerThing(c, { templateBody: wrongType, parameters, pacer })).rejects.toMatchObject({
      code: 'REGISTRATION_REJECTED',
      retryable: false,
      details: { errorName: 'ResourceRegistrationFailureException' },
    });
  });

  it('finds the certificate a registration made from the device key alone', async () => {
    const [d] = await registerDevices('FIND', 1);
    const { publicKeyPem } = d!.csr;
    expect(await findCertificateForKey(c, { publicKeyPem, since: startedAt })).toEqual({
      certificateId: d!.reg.certificateId,
      certificateArn: d!.reg.certificateArn,
      certificatePem: d!.reg.certificatePem,
      status: 'ACTIVE',
    });
    const excludeIds = new Set([d!.reg.certificateId]);
    expect(await findCertificateForKey(c, { publicKeyPem, since: startedAt, excludeIds })).toBeUndefined();
    const later = new Date(Date.now() + 60_000);
    expect(await findCertificateForKey(c, { publicKeyPem, since: later })).toBeUndefined();
  });
});

describe('registry', () => {
  it('lists the problems of damaged devices and none for sound ones', async () => {
    const [ok, noPolicy, inactive, detached] = await registerDevices('REG', 4);
    await c.iot.send(
      new DetachPolicyCommand({ policyName: RESOURCES.policyName, target: noPolicy!.reg.certificateArn }),
    );
    await c.iot.send(
      new UpdateCertificateCommand({ certificateId: inactive!.reg.certificateId, newStatus: 'INACTIVE' }),
    );
    await c.iot.send(
      new DetachThingPrincipalCommand({
        thingName: detached!.thingName,
        principal: detached!.reg.certificateArn,
      }),
    );
    const ghost = { serial: 'GHOST', thingName: 't-ghost', certificateId: 'cd'.repeat(32), policyName: 'p' };
    const progress: number[] = [];
    const checks = await checkDevices(
      c,
      [...[ok, noPolicy, inactive, detached].map((d) => recorded(d!)), ghost],
      {
        concurrency: 3,
        pacer,
        onProgress: (done) => progress.push(done),
      },
    );
    expect(checks.map((r) => [r.serial, r.problems.map((p) => p.code)])).toEqual([
      [ok!.serial, []],
      [noPolicy!.serial, ['POLICY_NOT_ATTACHED']],
      [inactive!.serial, ['CERT_NOT_ACTIVE']],
      [detached!.serial, ['CERT_NOT_ATTACHED']],
      ['GHOST', ['THING_MISSING', 'CERT_MISSING']],
    ]);
    expect(progress).toEqual([1, 2, 3, 4, 5]);
  });

  it('finds a second certificate minted for a device key, and removes it (twice)', async () => {
    const devices = await registerDevices('ORPH', 3);
    const d = devices[1]!;
    const extra = await c.iot.send(
      new CreateCertificateFromCsrCommand({ certificateSigningRequest: d.csr.csr, setAsActive: true }),
    );
    const extraId = extra.certificateId!;
    await c.iot.send(
      new AttachThingPrincipalCommand({ thingName: d.thingName, principal: extra.certificateArn! }),
    );
    await c.iot.send(
      new AttachPolicyCommand({ policyName: RESOURCES.policyName, target: extra.certificateArn! }),
    );
    const search = devices.map((x) => ({ ...recorded(x), publicKeyPem: x.csr.publicKeyPem }));
    const orphans = await findOrphans(c, { devices: search, since: startedAt });
    expect(orphans).toEqual([
      {
        certificateId: extraId,
        certificateArn: extra.certificateArn,
        serial: d.serial,
        status: 'ACTIVE',
        things: [d.thingName],
      },
    ]);
    expect(await removeOrphan(c, orphans[0]!)).toEqual({ deleted: true });
    await expect(
      c.iot.send(new DescribeCertificateCommand({ certificateId: extraId })),
    ).rejects.toMatchObject({
      name: 'ResourceNotFoundException',
    });
    expect(await removeOrphan(c, orphans[0]!)).toEqual({ deleted: false });
    expect(await findOrphans(c, { devices: search, since: startedAt })).toEqual([]);
    const [check] = await checkDevices(c, [recorded(d)]);
    expect(check!.problems).toEqual([]);
  });
});
