/**
 * `single`: as `bulk`, but the registrar calls RegisterThing once per device, paced under
 * `registration.tps`: for small lots, or accounts where bulk tasks are not allowed.
 */
import { STRATEGY_KEY_DELIVERIES, type KeyDelivery } from '../../config/index.js';
import { REGISTERED_FIRST, type Strategy } from './strategy.js';
import { hsmKeySteps } from './shared.js';

export const single: Strategy = {
  name: 'single',
  summary: 'HSM keys and CSRs, registered one RegisterThing call per device before the station',
  hsm: 'key-and-csr',
  certificate: { by: 'registrar', call: 'register-thing', templateFlavor: 'register-thing' },
  bundleKey: (keyDelivery: KeyDelivery) => (keyDelivery === 'plain' ? 'plain' : 'wrapped'),
  stationSteps: hsmKeySteps,
  lifecycle: REGISTERED_FIRST,
  keyDeliveries: STRATEGY_KEY_DELIVERIES.single,
};
