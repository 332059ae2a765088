/**
 * The station's certificates for device-generated keys, wired for one profile: the registrar's
 * `registerCsr`, or on a factory-CA line the CA in the station's HSM. Shared by `provline
 * station` and `provline rehearse`.
 */
import type { Redis } from 'ioredis';
import type { RegisterCsr } from '../../batch/index.js';
import { strategyFor } from '../../batch/strategies/index.js';
import type { ResolvedProfile } from '../../config/index.js';
import type { BatchStore, Journal } from '../../jobs/index.js';
import type { RegistrarDeps } from '../../jobs/registrar/index.js';
import type { Hsm } from '../../hsm/index.js';
import type { CommandContext } from '../context.js';

/**
 * Whether the station obtains the device's certificate: the device makes its own key (the
 * strategy's bundle carries none for the profile's key delivery), so only the station sees its CSR.
 */
export function stationRegisters(profile: ResolvedProfile): boolean {
  return strategyFor(profile).bundleKey(profile.keyDelivery) === 'none';
}

/**
 * Certificates for device-generated keys: the registrar's `registerCsr` (single mode), or on a
 * factory-CA line (jitp, jitr) the CA in this station's HSM (`signCsrWithFactoryCa`).
 */
export async function deviceRegistrar(
  c: CommandContext,
  redis: Redis,
  journal: Journal,
  batches: BatchStore,
  profile: ResolvedProfile,
  openHsm: () => Promise<Hsm>,
): Promise<RegisterCsr> {
  // Loaded on use: only device-key stations need the AWS SDK.
  const [{ registerCsr, signCsrWithFactoryCa, BulkSlot, slotOwner }, { makeClients, Pacer }] =
    await Promise.all([import('../../jobs/index.js'), import('../../cloud/index.js')]);
  const { workers } = c.loaded.config;
  const deps: RegistrarDeps = {
    journal,
    batches,
    cloud: makeClients(c.runtime.aws),
    slot: new BulkSlot(redis, journal.keys),
    pacer: new Pacer({ perSecond: profile.registration.tps }),
    owner: slotOwner(),
    now: Date.now,
    settings: {
      flushMs: workers.flushMs,
      registrationRounds: workers.registrationRounds,
      rootCaFile: c.runtime.aws.rootCaFile,
    },
    log: c.logger,
  };
  if (strategyFor(profile).certificate.by === 'factory-ca') {
    const { signDeviceKey } = await import('../../hsm/index.js');
    return (req) =>
      signCsrWithFactoryCa({ ...deps, sign: async (r) => signDeviceKey(await openHsm(), r) }, req);
  }
  return (req) => registerCsr(deps, req);
}
