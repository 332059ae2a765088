/** Parts the strategies that make keys in the HSM share. */
import type { KeyDelivery } from '../../config/schema.js';
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
