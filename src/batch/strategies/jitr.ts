/**
 * `jitr`: as `jitp` on the line (HSM keys, certificates signed offline by the factory CA), but
 * at the first connect AWS only registers the certificate PENDING_ACTIVATION and publishes the
 * registered event; the activator (`provline jitr-activator`, or the same handler deployed as
 * a Lambda) checks the certificate is one this CA signed, activates it, makes the thing and
 * attaches the profile's policy. The device's retry after that connects as its thing.
 */
import { STRATEGY_KEY_DELIVERIES } from '../../config/index.js';
import { SIGNED_OFFLINE, type Strategy } from './strategy.js';
import { DEVICE_KEY_SIGNED_STEPS, hsmKeySteps, hsmOrDeviceKey } from './shared.js';

export const jitr: Strategy = {
  name: 'jitr',
  summary:
    'HSM keys, certificates signed offline by the factory CA in the HSM; activated at first connect by the JITR activator',
  hsm: 'key-and-certificate',
  certificate: { by: 'factory-ca', call: 'jit-activator', templateFlavor: undefined },
  bundleKey: hsmOrDeviceKey,
  // A device that makes its own key returns a CSR at the station, signed there by the CA.
  stationSteps: (p) => (p.keyDelivery === 'device' ? DEVICE_KEY_SIGNED_STEPS : hsmKeySteps(p)),
  lifecycle: SIGNED_OFFLINE,
  keyDeliveries: STRATEGY_KEY_DELIVERIES.jitr,
};
