/**
 * A device bundle: everything a station needs to provision one serial, and nothing secret in
 * plaintext (the private key, when there is one, is wrapped under the profile's transport KEK).
 */
import type { DriverName, KeyDelivery, KeyType } from '../config/schema.js';

export const BUNDLE_VERSION = 1;

export interface DeviceBundle {
  version: typeof BUNDLE_VERSION;
  batchId: string;
  serial: string;
  thingName: string;
  profile: string;
  certificateId: string;
  certificateArn: string;
  /** The device certificate issued by AWS IoT (PEM). */
  certificatePem: string;
  /** The CA the device must trust for the MQTT endpoint (PEM; Amazon Root CA 1 in production). */
  rootCaPem: string;
  /** The iot:Data-ATS endpoint host. */
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
