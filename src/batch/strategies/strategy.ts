/**
 * A provisioning strategy: how one serial becomes a device that can connect as its thing.
 * Every strategy is one module of this one shape, and the rooms that do the work ask the
 * strategy instead of testing profile fields:
 *
 *   - the HSM stage (src/jobs) asks `hsm`: what to make for each serial before the station;
 *   - the registrar (src/jobs/registrar) asks `certificate`: who obtains the certificate, when,
 *     and with which template flavour;
 *   - the bundle and the station (src/batch/bundle.ts, src/flash/station) ask `bundle` and
 *     `station`: what the device receives and how the station proves it holds it;
 *   - reports and status ask `lifecycle`: the states a sound device walks to its goal.
 *
 * Adding a strategy adds a module beside bulk.ts, single.ts, device-csr.ts, jitp.ts and
 * jitr.ts, and one line in index.ts. Pure data and pure checks: no I/O here.
 */
import type { KeyDelivery, Profile, StrategyName } from '../../config/index.js';
import type { DeviceState } from '../states.js';

export type { StrategyName };

/** What the HSM stage makes for each serial. */
export type HsmWork =
  /** A key pair in the HSM and a CSR signed by it; the key leaves wrapped, or not at all. */
  | 'key-and-csr'
  /**
   * A key pair in the HSM and a certificate for it signed by the profile's factory CA, also in
   * the HSM: offline, no AWS call. The key leaves wrapped, or not at all.
   */
  | 'key-and-certificate'
  /** Nothing: the device makes its own key at the station. */
  | 'nothing';

/** Who obtains the device certificate, and how. */
export type CertificateSource =
  /** The registrar, before the station: one StartThingRegistrationTask per chunk. */
  | { by: 'registrar'; call: 'bulk-task'; templateFlavor: 'bulk' }
  /** The registrar, before the station: one RegisterThing per device, paced. */
  | { by: 'registrar'; call: 'register-thing'; templateFlavor: 'register-thing' }
  /** The station, from the CSR the device returns: RegisterThing per device. */
  | { by: 'station'; call: 'register-thing'; templateFlavor: 'register-thing' }
  /**
   * The factory CA, in the HSM stage; AWS registers the certificate at the device's first
   * connect: by the CA's JITP template (`jit-template`), or left PENDING_ACTIVATION for the
   * customer's activator (`jit-activator`, whose thing and policy come from the profile).
   */
  | { by: 'factory-ca'; call: 'jit-template'; templateFlavor: 'jitp' }
  | { by: 'factory-ca'; call: 'jit-activator'; templateFlavor: undefined }
  /** The device itself, over MQTT with a claim: CreateCertificateFromCsr, then RegisterThing. */
  | { by: 'device'; call: 'fleet'; templateFlavor: 'fleet' };

/** What the bundle carries for the device's private key. */
export type BundleKey = 'wrapped' | 'plain' | 'none';

/** The station's steps for one device visit, in order. */
export type StationStep =
  | 'identify'
  | 'keygen-on-device'
  | 'register-csr'
  | 'sign-csr'
  | 'write-certificate'
  | 'write-key'
  | 'read-back'
  | 'proof-of-possession'
  | 'first-connect'
  | 'write-claim'
  | 'fleet-provision';

export interface Strategy {
  readonly name: StrategyName;
  /** One line for `provline profiles` and the docs. */
  readonly summary: string;
  readonly hsm: HsmWork;
  readonly certificate: CertificateSource;
  /** The bundle's key for a profile's key delivery. */
  bundleKey(keyDelivery: KeyDelivery): BundleKey;
  /** The station's steps for a profile (the first connect only where the profile wants it). */
  stationSteps(profile: Pick<Profile, 'keyDelivery'>): readonly StationStep[];
  /** The states a sound device walks, in order, from intake to its goal. */
  readonly lifecycle: readonly DeviceState[];
  /**
   * The key deliveries it carries out (config's STRATEGY_KEY_DELIVERIES, which the profile
   * check uses: the configuration cannot import this room).
   */
  readonly keyDeliveries: readonly KeyDelivery[];
}

/** The path every strategy that registers before the station walks. */
/**
 * What the HSM stage makes for a profile: the strategy's work, or nothing when the device
 * makes its own key (key delivery `device`: the certificate is obtained at the station).
 */
export function hsmWorkFor(strategy: Strategy, keyDelivery: KeyDelivery): HsmWork {
  return keyDelivery === 'device' ? 'nothing' : strategy.hsm;
}

/** The path of the strategies whose certificates the factory CA signs. */
export const SIGNED_OFFLINE: readonly DeviceState[] = [
  'accepted',
  'signed',
  'flashed',
  'verified',
  'connected',
];

export const REGISTERED_FIRST: readonly DeviceState[] = [
  'accepted',
  'keyed',
  'registering',
  'registered',
  'flashed',
  'verified',
  'connected',
];
