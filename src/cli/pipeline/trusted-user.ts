/**
 * Provisioning by trusted user in the demo (docs/operations.md §2.9). A lot of claim sensors
 * is submitted and its allow-list published as for any claim lot. Then, as an installer's app
 * would, provline asks AWS IoT for a temporary claim (CreateProvisioningClaim, five minutes,
 * the profile's claim policy attached) and hands it to a simulated device. The device
 * provisions itself through the hook exactly as one holding the factory claim does:
 * CreateCertificateFromCsr with a key it makes, RegisterThing with its serial and lot. Then it
 * connects as its thing. The temporary key is held in memory only.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { mqttAddress } from '../../batch/index.js';
import { makeClients } from '../../cloud/index.js';
import type { ResolvedProfile } from '../../config/index.js';
import { ProvlineError } from '../../core/index.js';
import type { Hsm } from '../../hsm/index.js';
import { ClaimStore, issueClaim, submitBatch } from '../../jobs/index.js';
import type { CommandContext } from '../context.js';
import { prepareClaimLot } from './claim-lot.js';
import type { PipelineHandles } from './open.js';

export interface TrustedUserDevice {
  serial: string;
  batchId: string;
  thingName: string;
  certificateId: string;
  temporaryClaimId: string;
  expiration: Date;
}

/** Submits a claim lot from `csvText` (its allow-list published); returns the batch id. */
export async function submitTrustedUserLot(
  c: CommandContext,
  p: PipelineHandles,
  hsm: Hsm,
  profile: ResolvedProfile,
  csvPath: string,
  csvText: string,
): Promise<string> {
  writeFileSync(csvPath, csvText);
  const lot = await prepareClaimLot(c, p, profile, csvPath, hsm);
  try {
    const r = await submitBatch(p, { csvPath, profile, hsmChunk: c.loaded.config.workers.hsmChunk });
    if (r.status !== 'submitted')
      throw new ProvlineError(
        'DEMO_FAILED',
        `the trusted-user lot ${csvPath} was not submitted (${r.status})`,
      );
    await lot.publish(r.batchId);
    return r.batchId;
  } finally {
    lot.close();
  }
}

/** A temporary claim for the lot's device, which provisions itself with it and connects. */
export async function provisionByTrustedUser(
  c: CommandContext,
  p: PipelineHandles,
  hsm: Hsm,
  profile: ResolvedProfile,
  lot: { serial: string; batchId: string; mqttEndpoint: string },
): Promise<TrustedUserDevice> {
  const cloud = makeClients(c.runtime.aws, { maxAttempts: 3 });
  try {
    const claim = await issueClaim(
      { cloud, store: new ClaimStore(p.redis, p.prefix), hsm: () => Promise.resolve(hsm) },
      profile,
    );
    const settings = profile.claim!;
    const address = mqttAddress(lot.mqttEndpoint);
    if (!address)
      throw new ProvlineError(
        'DEMO_FAILED',
        `the stand-in's MQTT endpoint "${lot.mqttEndpoint}" is not host:port`,
      );
    const rootCaPem = readFileSync(c.runtime.aws.rootCaFile, 'utf8');
    const thingName = profile.thingName.replaceAll('{serial}', lot.serial);
    // The installer's app hands the temporary claim to the device (a simulated one here).
    const out = await c.entries.devices.provisionByClaim({
      ...address,
      clientId: thingName,
      rootCaPem,
      claimCertificatePem: claim.certificatePem,
      claimKeyPem: claim.privateKeyPem,
      templateName: settings.templateName,
      parameters: { [settings.serialParameter]: lot.serial, [settings.lotParameter]: lot.batchId },
      mode: settings.deviceKey,
      subject: `CN=${thingName}`,
    });
    if (!out.ok)
      throw new ProvlineError(
        'DEMO_FAILED',
        `the trusted-user device ${lot.serial} did not provision (${out.stage}${out.errorCode ? ` ${out.errorCode}` : ''}): ${out.message}`,
      );
    if (!out.connected)
      throw new ProvlineError(
        'DEMO_FAILED',
        `the trusted-user device ${lot.serial} provisioned as ${out.thingName} but did not connect: ${out.connectReason ?? 'no attempt'}`,
      );
    return {
      serial: lot.serial,
      batchId: lot.batchId,
      thingName: out.thingName,
      certificateId: out.certificateId,
      temporaryClaimId: claim.certificateId,
      expiration: claim.expiration,
    };
  } finally {
    cloud.destroy();
  }
}
