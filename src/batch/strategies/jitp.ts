/**
 * `jitp`: the HSM makes each key and the profile's factory CA (its key in the same HSM) signs
 * the device certificate, offline, with no AWS call per device. The station writes the
 * certificate with the CA chain and the key; at the device's first connect AWS runs the CA's
 * JITP template (the profile's template, attached by `provline ca register`), closes that first
 * connection, and the device's next connect is as its thing.
 */
import { STRATEGY_KEY_DELIVERIES } from '../../config/index.js';
import { SIGNED_OFFLINE, type Strategy } from './strategy.js';
import { DEVICE_KEY_SIGNED_STEPS, hsmKeySteps, hsmOrDeviceKey } from './shared.js';

export const jitp: Strategy = {
  name: 'jitp',
  summary:
    'HSM keys, certificates signed offline by the factory CA in the HSM; AWS provisions each device by JITP at its first connect',
  hsm: 'key-and-certificate',
  certificate: { by: 'factory-ca', call: 'jit-template', templateFlavor: 'jitp' },
  bundleKey: hsmOrDeviceKey,
  // A device that makes its own key returns a CSR at the station, signed there by the CA.
  stationSteps: (p) => (p.keyDelivery === 'device' ? DEVICE_KEY_SIGNED_STEPS : hsmKeySteps(p)),
  lifecycle: SIGNED_OFFLINE,
  keyDeliveries: STRATEGY_KEY_DELIVERIES.jitp,
};
