/**
 * Device bundles, built on demand from the journal record and the batch: everything a
 * station needs for one serial, and no private key in plaintext (wrapped under the KEK, or
 * absent for device-generated keys). Pure: no I/O here.
 */
import { BUNDLE_VERSION, type DeviceBundle } from '../batch/bundle.js';
import type { BatchPlan } from '../batch/plan.js';
import type { BatchMeta } from './batches.js';
import type { DeviceRecord } from './journal.js';

/** States in which a device has a certificate a station can write. */
export const BUNDLE_STATES = new Set(['registered', 'flashed', 'verified']);

export function bundleFor(rec: DeviceRecord, plan: BatchPlan, meta: BatchMeta): DeviceBundle | undefined {
  const f = rec.fields;
  if (!BUNDLE_STATES.has(rec.state) || !f.certificatePem || !f.certificateId) return undefined;
  return {
    version: BUNDLE_VERSION,
    batchId: rec.batch,
    serial: rec.serial,
    thingName: rec.thingName,
    profile: plan.profile.name,
    certificateId: f.certificateId,
    certificateArn: f.certificateArn ?? '',
    certificatePem: f.certificatePem,
    rootCaPem: meta.rootCaPem ?? '',
    endpoint: meta.endpoint ?? '',
    keyType: plan.profile.keyType,
    keyDelivery: plan.profile.keyDelivery,
    ...(f.wrappedKey ? { wrappedKey: f.wrappedKey } : {}),
    ...(f.kekId ? { kekId: f.kekId } : {}),
    driver: plan.profile.driver,
    driverSettings: plan.profile.driverSettings,
  };
}
