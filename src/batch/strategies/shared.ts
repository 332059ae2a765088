/** Parts the strategies that make keys in the HSM share. */
import type { KeyDelivery, Profile } from '../../config/schema.js';
import type { StationStep, StrategyName, StrategyProblem } from './strategy.js';

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

export function noDeviceKeys(profile: Pick<Profile, 'keyDelivery'>, name: StrategyName): StrategyProblem[] {
  return profile.keyDelivery === 'device'
    ? [
        {
          path: 'keyDelivery',
          message: `strategy "${name}" makes the key in the HSM: keyDelivery "device" needs strategy "device-csr"`,
        },
      ]
    : [];
}
