/**
 * What the station knows about a serial, and what it decides to do with the device: pure
 * functions over plain data (a journal record, a batch plan, a cached entry). The station only
 * touches a device once `decide` says `write` or `register`; everything else is a refusal with
 * an operator message, and the device is left untouched.
 */
import { bundleFor, type DeviceBundle } from '../../batch/index.js';
import type { BatchView, ClaimView, DeviceRecord, DeviceState } from '../../batch/index.js';
import type { DriverName } from '../../config/index.js';
import { ProvlineError, type ErrorCode } from '../../core/index.js';

export interface BundleLookup {
  kind: 'bundle';
  serial: string;
  batchId: string;
  state: DeviceState;
  bundle: DeviceBundle;
  /** The profile's KEK label at submit time (plain delivery unwraps under it). */
  kekLabel: string;
}

/** A device-key device (allow-list entry) that registers at the station. */
export interface RegisterLookup {
  kind: 'register';
  serial: string;
  batchId: string;
  state: DeviceState;
  profile: string;
  driver: DriverName;
  driverSettings: Record<string, string | number | boolean>;
  thingName: string;
  /** RFC 4514 subject for the on-device CSR: CN = thing name, then the profile's csrSubject. */
  subject: string;
  /** The CSR already stored by an earlier visit (keyed/registering): resume with it, no new key. */
  csrPem?: string;
}

/** A claim device (strategy claim): the station writes the claim, the device does the rest. */
export interface ClaimLookup {
  kind: 'claim';
  serial: string;
  batchId: string;
  state: DeviceState;
  profile: string;
  driver: DriverName;
  driverSettings: Record<string, string | number | boolean>;
  thingName: string;
  keyDelivery: 'wrapped' | 'plain';
  keyType: BatchView['plan']['profile']['keyType'];
  endpoint: string;
  rootCaPem: string;
  claim: ClaimView;
}

export type DeviceLookup =
  | { kind: 'unknown'; serial: string }
  | ClaimLookup
  | BundleLookup
  | RegisterLookup
  | {
      kind: 'pending';
      serial: string;
      batchId: string;
      state: DeviceState;
      profile: string;
      error?: { code: string; message: string };
    };

/** States in which a device-key device is registered by the station. */
const REGISTER_STATES: readonly DeviceState[] = ['accepted', 'keyed', 'registering'];

/** The station's view of one journal record and its batch (pure). */
export function lookupFromRecord(rec: DeviceRecord, batch: BatchView): DeviceLookup {
  const p = batch.plan.profile;
  const base = { serial: rec.serial, batchId: rec.batch, state: rec.state };
  // A device that failed at a station after it got its certificate is retried like a registered
  // one (the life cycle allows failed → flashed); bundleFor only serves the bundle states.
  const asBundle =
    rec.state === 'failed' && rec.fields.certificatePem ? { ...rec, state: 'registered' as const } : rec;
  if (p.strategy === 'claim') {
    // A denied or failed device is tried again on its next visit (a hook that timed out, a
    // throttled request); the hook decides again, and allows each serial once.
    if (!batch.claim || rec.state === 'connected')
      return { kind: 'pending', ...base, profile: p.name, ...(rec.error ? { error: rec.error } : {}) };
    return {
      kind: 'claim',
      ...base,
      profile: p.name,
      driver: p.driver,
      driverSettings: p.driverSettings,
      thingName: rec.thingName,
      keyDelivery: p.keyDelivery === 'plain' ? 'plain' : 'wrapped',
      keyType: p.keyType,
      endpoint: batch.endpoint ?? '',
      rootCaPem: batch.rootCaPem ?? '',
      claim: batch.claim,
    };
  }
  const bundle = bundleFor(asBundle, batch);
  if (bundle) return { kind: 'bundle', ...base, bundle, kekLabel: p.kekLabel };
  if (p.keyDelivery === 'device' && REGISTER_STATES.includes(rec.state)) {
    return {
      kind: 'register',
      ...base,
      profile: p.name,
      driver: p.driver,
      driverSettings: p.driverSettings,
      thingName: rec.thingName,
      subject: csrSubject(rec.thingName, p.csrSubject),
      ...(rec.state !== 'accepted' && rec.fields.csrPem ? { csrPem: rec.fields.csrPem } : {}),
    };
  }
  return { kind: 'pending', ...base, profile: p.name, ...(rec.error ? { error: rec.error } : {}) };
}

/** CN first, then the profile's extra attributes, RFC 4514-escaped. */
export function csrSubject(thingName: string, extra: Record<string, string>): string {
  const order = ['O', 'OU', 'L', 'ST', 'C'];
  const parts = [`CN=${escapeRdn(thingName)}`];
  for (const k of order) if (extra[k] !== undefined) parts.push(`${k}=${escapeRdn(extra[k])}`);
  return parts.join(',');
}

function escapeRdn(v: string): string {
  return v
    .replace(/[\\,+"<>;=]/g, (c) => `\\${c}`)
    .replace(/^[ #]/, (c) => `\\${c}`)
    .replace(/ $/, '\\ ');
}

export interface StationIdentity {
  /** The profile the station runs (its driver speaks to the devices on its ports). */
  profile: string;
  driver: DriverName;
  /** Whether device-key devices can be registered now (journal online, a registrar wired). */
  canRegister: boolean;
}

export type Decision =
  | { action: 'refuse'; error: ProvlineError }
  | { action: 'write'; lookup: BundleLookup }
  | { action: 'register'; lookup: RegisterLookup }
  | { action: 'claim'; lookup: ClaimLookup };

/** What to do with the device that reported `lookup.serial`. Pure. */
export function decide(lookup: DeviceLookup, station: StationIdentity): Decision {
  const refuse = (code: ErrorCode, message: string, hint: string): Decision => ({
    action: 'refuse',
    error: new ProvlineError(code, message, { hint, details: { serial: lookup.serial } }),
  });
  if (lookup.kind === 'unknown')
    return refuse(
      'STATION_DEVICE_UNKNOWN',
      `device ${lookup.serial} is not in any submitted lot`,
      'set it aside and check its label against the lot; nothing was written to it',
    );
  const profile = lookup.kind === 'bundle' ? lookup.bundle.profile : lookup.profile;
  if (profile !== station.profile)
    return refuse(
      'STATION_WRONG_PROFILE',
      `device ${lookup.serial} belongs to batch ${lookup.batchId} of profile ${profile}; this station runs ${station.profile}`,
      `take it to a station running --profile ${profile}; nothing was written to it`,
    );
  switch (lookup.kind) {
    case 'pending': {
      if (lookup.state === 'connected')
        return refuse(
          'STATION_NOT_REGISTERED',
          `device ${lookup.serial} of batch ${lookup.batchId} already provisioned itself by claim and connected`,
          'nothing to do; nothing was written to it',
        );
      const why = lookup.error ? `failed: ${lookup.error.code}` : lookup.state;
      return refuse(
        'STATION_NOT_REGISTERED',
        `device ${lookup.serial} of batch ${lookup.batchId} has no certificate yet (${why})`,
        lookup.error
          ? 'see `provline status` for the failure; nothing was written to it'
          : 'wait for the batch to finish registering; nothing was written to it',
      );
    }
    case 'register':
      if (lookup.driver !== station.driver) break;
      if (!station.canRegister)
        return refuse(
          'STATION_OFFLINE',
          `device ${lookup.serial} generates its own key and must be registered, which needs the journal and AWS`,
          'the journal is unreachable: set the device aside until the network is back; nothing was written to it',
        );
      return { action: 'register', lookup };
    case 'claim':
      if (lookup.driver !== station.driver) break;
      if (!lookup.rootCaPem || !lookup.endpoint)
        return refuse(
          'STATION_BUNDLE_INCOMPLETE',
          `claim batch ${lookup.batchId} has no endpoint or root CA yet`,
          're-publish the lot (`provline claim publish <batch>`); nothing was written to it',
        );
      return { action: 'claim', lookup };
    case 'bundle': {
      const b = lookup.bundle;
      if (b.driver !== station.driver) break;
      const missing = [
        ...(b.certificatePem ? [] : ['certificate']),
        ...(b.rootCaPem ? [] : ['root CA']),
        ...(b.keyDelivery !== 'device' && !b.wrappedKey ? ['wrapped key'] : []),
      ];
      if (missing.length)
        return refuse(
          'STATION_BUNDLE_INCOMPLETE',
          `the bundle of device ${lookup.serial} (batch ${lookup.batchId}) has no ${missing.join(', ')}`,
          'the batch is not ready for flashing (see `provline status`); nothing was written to it',
        );
      return { action: 'write', lookup };
    }
  }
  return refuse(
    'STATION_WRONG_PROFILE',
    `device ${lookup.serial} needs driver ${lookup.kind === 'bundle' ? lookup.bundle.driver : lookup.kind === 'claim' || lookup.kind === 'register' ? lookup.driver : '?'}; this station speaks ${station.driver}`,
    'take it to a station running its profile; nothing was written to it',
  );
}
