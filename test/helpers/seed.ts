/**
 * A stand-in for the batch pipeline, for the station's tests and benchmark: puts a batch
 * straight into the journal with real HSM identities (keys made and wrapped by the HSM under the
 * profile's KEK) and certificates from a local test CA, so the station can be exercised without
 * queues, workers or AWS. Device-key profiles get an allow-list (state `accepted`) instead.
 * With `register`, the certificates come from the local stand-in instead (CreateCertificateFromCsr
 * over the HSM's CSR, the profile's policy and a thing attached), and the batch points at its MQTT
 * endpoint and root CA, so the devices can make their first connect for real.
 * A test fixture: never part of the station.
 */
import 'reflect-metadata';
import { X509CertificateGenerator } from '@peculiar/x509';
import {
  AttachPolicyCommand,
  AttachThingPrincipalCommand,
  CreateCertificateFromCsrCommand,
  CreateThingCommand,
} from '@aws-sdk/client-iot';
import { Redis } from 'ioredis';
import { createHash, createPublicKey, randomBytes, webcrypto } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { buildPlan, type BatchPlan } from '../../src/batch/plan.js';
import { RowRules, type IntakeRow } from '../../src/batch/rules.js';
import { makeClients, type CloudClients } from '../../src/cloud/clients.js';
import { ensureResources } from '../../src/cloud/resources.js';
import { getProfile, loadConfig, type LoadedConfig, type ResolvedProfile } from '../../src/config/load.js';
import { openHsm, type Hsm } from '../../src/hsm/hsm.js';
import type { DeviceJournal } from '../../src/batch/journal.js';
import { BatchStore } from '../../src/jobs/batches.js';
import { Journal } from '../../src/jobs/journal.js';
import { stationJournal } from '../../src/jobs/station-store.js';
import { resolveRuntime, type Runtime } from '../../src/stack/runtime.js';
import { stackUp } from '../../src/stack/stack.js';

const EC = { name: 'ECDSA', namedCurve: 'P-256' };
const SIG = { name: 'ECDSA', hash: 'SHA-256' };

export interface SeedCa {
  rootCaPem: string;
  /** A device certificate with subject CN=`cn` over `spkiDer`. */
  issue(cn: string, spkiDer: Uint8Array): Promise<string>;
}

export async function makeSeedCa(name = 'provline station test root'): Promise<SeedCa> {
  const keys = await webcrypto.subtle.generateKey(EC, false, ['sign', 'verify']);
  const root = await X509CertificateGenerator.createSelfSigned({
    name: `CN=${name}`,
    keys,
    signingAlgorithm: SIG,
  });
  return {
    rootCaPem: root.toString('pem'),
    issue: async (cn, spkiDer) =>
      (
        await X509CertificateGenerator.create({
          subject: `CN=${cn}`,
          issuer: root.subject,
          publicKey: Buffer.from(spkiDer),
          signingKey: keys.privateKey,
          signingAlgorithm: SIG,
        })
      ).toString('pem'),
  };
}

export interface SeedRequest {
  journal: Journal;
  batches: BatchStore;
  profile: ResolvedProfile;
  batchId: string;
  serials: string[];
  ca: SeedCa;
  /** Makes the device keys; required unless the profile's keyDelivery is `device`. */
  hsm?: Hsm;
  /** Stop at this state (default `registered`; device-key profiles always stop at `accepted`). */
  until?: 'accepted' | 'registered';
  /** Register the certificates with the stand-in (and point the batch at its MQTT endpoint). */
  register?: StandInRegistration;
  now?: number;
}

/** The local stand-in, as seeding needs it to issue certificates devices can connect with. */
export interface StandInRegistration {
  cloud: CloudClients;
  /** `localhost:<port>` of its MQTT endpoint. */
  mqttEndpoint: string;
  rootCaPem: string;
}

export interface SeededRegistration {
  certificateId: string;
  certificatePem: string;
  certificateArn: string;
}

/** A certificate from the stand-in for the device's CSR, the profile's policy attached, and its thing. */
async function standInCertificate(
  reg: StandInRegistration,
  plan: BatchPlan,
  thingName: string,
  csrPem: string,
): Promise<SeededRegistration> {
  const { iot } = reg.cloud;
  const c = await iot.send(
    new CreateCertificateFromCsrCommand({ certificateSigningRequest: csrPem, setAsActive: true }),
  );
  await iot.send(new AttachPolicyCommand({ policyName: plan.profile.policyName, target: c.certificateArn! }));
  await iot.send(new CreateThingCommand({ thingName }));
  await iot.send(new AttachThingPrincipalCommand({ thingName, principal: c.certificateArn! }));
  return {
    certificateId: c.certificateId!,
    certificatePem: c.certificatePem!,
    certificateArn: c.certificateArn!,
  };
}

export interface SeededDevice {
  serial: string;
  thingName: string;
  certificatePem?: string;
  /** SubjectPublicKeyInfo (DER) of the device key. */
  spkiDer?: Buffer;
}

export async function seedBatch(req: SeedRequest): Promise<{ plan: BatchPlan; devices: SeededDevice[] }> {
  const { profile, journal } = req;
  const now = req.now ?? Date.now();
  // The rows exactly as intake makes them from a CSV of serials (other columns the profile
  // needs are filled with "A").
  const extra = RowRules.forHeader(['serial'], profile)
    .problems.filter((p) => p.code === 'HEADER_MISSING_COLUMN' && p.column)
    .map((p) => p.column!);
  const { rules, problems } = RowRules.forHeader(['serial', ...extra], profile);
  const rows = req.serials.map((serial, i) =>
    rules?.check([serial, ...extra.map(() => 'A')], i + 2, problems),
  );
  if (!rules || problems.length || rows.some((r) => !r))
    throw new Error(`seedBatch: ${problems.map((p) => p.message).join('; ')}`);
  const templateBody = readFileSync(profile.templatePath, 'utf8');
  const plan = buildPlan({
    batchId: req.batchId,
    now: new Date(now),
    profile,
    templateBody,
    ...(profile.policyPath ? { policyDocument: readFileSync(profile.policyPath, 'utf8') } : {}),
    source: {
      file: 'seed',
      sha256: createHash('sha256').update(req.serials.join('\n')).digest('hex'),
      rows: rows.length,
    },
    rows: rows as IntakeRow[],
  });
  await req.batches.create(plan, now);
  await journal.accept(req.batchId, plan.devices);
  const devices: SeededDevice[] = plan.devices.map((r) => ({ serial: r.serial, thingName: r.thingName }));
  // Device-key batches are registered at the station, by the registrar, which prepares the
  // account and records the endpoint and root CA itself.
  if (profile.keyDelivery === 'device' || req.until === 'accepted') return { plan, devices };
  const reg = req.register;
  await req.batches.set(
    req.batchId,
    reg
      ? { endpoint: reg.mqttEndpoint, rootCaPem: reg.rootCaPem }
      : { endpoint: 'seed.iot.local', rootCaPem: req.ca.rootCaPem },
  );
  if (reg)
    await ensureResources(reg.cloud, {
      policyName: plan.profile.policyName,
      ...(plan.profile.policyDocument === undefined ? {} : { policyDocument: plan.profile.policyDocument }),
      thingGroups: [],
    });
  if (!req.hsm) throw new Error('seedBatch: an HSM is needed to make device keys');
  for (const d of devices) {
    const id = await req.hsm.createDeviceIdentity({
      serial: d.serial,
      thingName: d.thingName,
      keyType: profile.keyType,
      kekLabel: profile.kekLabel,
    });
    const spkiDer = createPublicKey(id.publicKey).export({ type: 'spki', format: 'der' });
    const issued = reg
      ? await standInCertificate(reg, plan, d.thingName, id.csrPem)
      : await localCertificate(req.ca, d.thingName, spkiDer);
    const { certificatePem, certificateId } = issued;
    const base = { batchId: req.batchId, serial: d.serial };
    await journal.transition({
      ...base,
      to: 'keyed',
      fields: { csrPem: id.csrPem, publicKey: id.publicKey, wrappedKey: id.wrappedKey, kekId: id.kekId },
    });
    await journal.transition({ ...base, to: 'registering' });
    await journal.transition({
      ...base,
      to: 'registered',
      fields: { certificateId, certificateArn: issued.certificateArn, certificatePem },
    });
    Object.assign(d, { certificatePem, spkiDer });
  }
  return { plan, devices };
}

async function localCertificate(ca: SeedCa, thingName: string, spkiDer: Buffer): Promise<SeededRegistration> {
  const certificatePem = await ca.issue(thingName, spkiDer);
  const certificateId = createHash('sha256').update(certificatePem).digest('hex');
  return {
    certificatePem,
    certificateId,
    certificateArn: `arn:aws:iot:us-east-1:000000000000:cert/${certificateId}`,
  };
}

/** The local stack (Redis, SoftHSM, stand-in) of a scratch home, opened for seeding. */
export interface SeedWorld {
  home: string;
  loaded: LoadedConfig;
  runtime: Runtime;
  redisUrl: string;
  redis: Redis;
  journal: Journal;
  batches: BatchStore;
  /** The journal as a station sees it (what `JournalStore` takes). */
  stationJournal: DeviceJournal;
  hsm: Hsm;
  ca: SeedCa;
  /** The stack's stand-in, for seeding devices that can connect (`seedBatch({ register })`). */
  standIn: StandInRegistration;
  profile(name: string): ResolvedProfile;
  /** The profile's KEK, imported into the HSM with a random value on first use (the value is returned for simulators). */
  kek(profile: ResolvedProfile): Promise<Buffer>;
  close(): Promise<void>;
}

export async function openSeedWorld(home: string, options: { prefix?: string } = {}): Promise<SeedWorld> {
  const status = await stackUp(home);
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, PROVLINE_HOME: home };
  const loaded = loadConfig({ cwd: home, env });
  const runtime = resolveRuntime(loaded, env);
  const redisUrl = status.redis.url ?? '';
  const redis = new Redis(redisUrl);
  const journal = new Journal(redis, options.prefix ? { prefix: options.prefix } : {});
  const batches = new BatchStore(redis, journal.keys);
  const hsm = await openHsm(runtime.hsm, { env });
  const ca = await makeSeedCa();
  const keks = new Map<string, Buffer>();
  const cloud = makeClients(runtime.aws);
  const standIn: StandInRegistration = {
    cloud,
    mqttEndpoint: status.aws.mqttEndpoint ?? '',
    rootCaPem: readFileSync(runtime.aws.rootCaFile, 'utf8'),
  };
  return {
    home,
    loaded,
    runtime,
    redisUrl,
    redis,
    journal,
    batches,
    stationJournal: stationJournal(journal, batches),
    hsm,
    ca,
    standIn,
    profile: (name) => getProfile(loaded, name),
    async kek(profile) {
      let value = keks.get(profile.kekLabel);
      if (!value) {
        value = randomBytes(32);
        await hsm.importKek({ label: profile.kekLabel, value });
        keks.set(profile.kekLabel, value);
      }
      return value;
    },
    async close() {
      cloud.destroy();
      hsm.close();
      await redis.quit();
    },
  };
}
