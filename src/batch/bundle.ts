/**
 * A device bundle: everything a station needs to provision one serial, and nothing secret in
 * plaintext (the private key, when there is one, is wrapped under the profile's transport KEK,
 * or absent for device-generated keys). Built on demand from the journal record and the batch;
 * pure, no I/O here.
 */
import type { DriverName, KeyDelivery, KeyType } from '../config/index.js';
import type { BatchView, DeviceRecord } from './journal.js';
import type { DeviceState } from './states.js';

export const BUNDLE_VERSION = 1;

export interface DeviceBundle {
  version: typeof BUNDLE_VERSION;
  batchId: string;
  serial: string;
  thingName: string;
  profile: string;
  certificateId: string;
  certificateArn: string;
  /**
   * The device certificate (PEM): issued by AWS IoT, or signed by the profile's factory CA and
   * then followed by the CA chain the device presents on its first connect (jitp, jitr).
   */
  certificatePem: string;
  /** The CA the device must trust for the MQTT endpoint (PEM; Amazon Root CA 1 in production). */
  rootCaPem: string;
  /**
   * The MQTT endpoint devices connect to: the account's iot:Data-ATS host, or `host:port` (the
   * local stand-in's `localhost:<port>`). Without a port it is AWS's 8883 (see mqttAddress).
   */
  endpoint: string;
  keyType: KeyType;
  keyDelivery: KeyDelivery;
  /** base64 of the RFC 5649 (CKM_AES_KEY_WRAP_PAD) blob; absent for device-generated keys. */
  wrappedKey?: string;
  /** Which KEK wrapped it (PKCS#11 URI of the KEK object). */
  kekId?: string;
  driver: DriverName;
  driverSettings: Record<string, string | number | boolean>;
}

/** States in which a device has a certificate a station can write. */
export const BUNDLE_STATES: ReadonlySet<DeviceState> = new Set([
  'registered',
  'signed',
  'flashed',
  'verified',
  'connected',
]);

/** AWS IoT's MQTT over TLS port, for an endpoint given as a bare host (every bundle before ports). */
export const MQTT_TLS_PORT = 8883;

/**
 * Host and port of a bundle's endpoint: `host`, `host:port` or `[v6]:port`. Undefined for text
 * that is neither (empty, a URL, a port out of range).
 */
export function mqttAddress(endpoint: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+))(?::(\d{1,5}))?$/.exec(endpoint.trim());
  if (!m) return undefined;
  const port = m[3] === undefined ? MQTT_TLS_PORT : Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  return { host: (m[1] ?? m[2])!, port };
}

export function bundleFor(rec: DeviceRecord, batch: BatchView): DeviceBundle | undefined {
  const f = rec.fields;
  const { profile } = batch.plan;
  if (!BUNDLE_STATES.has(rec.state) || !f.certificatePem || !f.certificateId) return undefined;
  return {
    version: BUNDLE_VERSION,
    batchId: rec.batch,
    serial: rec.serial,
    thingName: rec.thingName,
    profile: profile.name,
    certificateId: f.certificateId,
    certificateArn: f.certificateArn ?? '',
    certificatePem: f.certificatePem,
    rootCaPem: batch.rootCaPem ?? '',
    endpoint: batch.endpoint ?? '',
    keyType: profile.keyType,
    keyDelivery: profile.keyDelivery,
    ...(f.wrappedKey ? { wrappedKey: f.wrappedKey } : {}),
    ...(f.kekId ? { kekId: f.kekId } : {}),
    driver: profile.driver,
    driverSettings: profile.driverSettings,
  };
}
