/** Parts the strategies that make keys in the HSM share. */
import type { KeyDelivery } from '../../config/index.js';
import type { StationStep } from './strategy.js';

export function hsmKeySteps(profile: { keyDelivery: KeyDelivery }): readonly StationStep[] {
  return [
    'identify',
    'write-certificate',
    'write-key',
    'read-back',
    ...(profile.keyDelivery === 'wrapped' ? (['proof-of-possession'] as const) : []),
    'first-connect',
  ];
}

/** The station's steps for a device that makes its own key, on a factory-CA line. */
export const DEVICE_KEY_SIGNED_STEPS: readonly StationStep[] = [
  'identify',
  'keygen-on-device',
  'sign-csr',
  'write-certificate',
  'read-back',
  'proof-of-possession',
  'first-connect',
];

/** The bundle's key: wrapped or plain for an HSM key, none for a key the device made. */
export function hsmOrDeviceKey(keyDelivery: KeyDelivery): 'wrapped' | 'plain' | 'none' {
  return keyDelivery === 'device' ? 'none' : keyDelivery === 'plain' ? 'plain' : 'wrapped';
}
