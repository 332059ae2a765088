/**
 * `bulk`: the HSM makes each key and CSR; the registrar registers the CSRs in chunks, one
 * StartThingRegistrationTask each; the station writes the AWS certificate and the key (wrapped
 * for the device to unwrap, or plain through the HSM) and verifies them.
 */
import { STRATEGY_KEY_DELIVERIES, type KeyDelivery } from '../../config/index.js';
import { REGISTERED_FIRST, type Strategy } from './strategy.js';
import { hsmKeySteps } from './shared.js';

export const bulk: Strategy = {
  name: 'bulk',
  summary: 'HSM keys and CSRs, registered in chunks by bulk registration tasks before the station',
  hsm: 'key-and-csr',
  certificate: { by: 'registrar', call: 'bulk-task', templateFlavor: 'bulk' },
  bundleKey: (keyDelivery: KeyDelivery) => (keyDelivery === 'plain' ? 'plain' : 'wrapped'),
  stationSteps: hsmKeySteps,
  lifecycle: REGISTERED_FIRST,
  keyDeliveries: STRATEGY_KEY_DELIVERIES.bulk,
};
