/**
 * `device-csr`: the device makes its own key at the station and answers with a CSR; the station
 * registers it (RegisterThing, the registrar's single path) and writes the certificate back.
 * No key ever exists outside the device. `submit` records the lot as the allow-list.
 */
import { STRATEGY_KEY_DELIVERIES } from '../../config/index.js';
import { REGISTERED_FIRST, type Strategy } from './strategy.js';

export const deviceCsr: Strategy = {
  name: 'device-csr',
  summary: 'the device makes its key at the station; the station registers its CSR with RegisterThing',
  hsm: 'nothing',
  certificate: { by: 'station', call: 'register-thing', templateFlavor: 'register-thing' },
  bundleKey: () => 'none',
  stationSteps: () => [
    'identify',
    'keygen-on-device',
    'register-csr',
    'write-certificate',
    'read-back',
    'proof-of-possession',
    'first-connect',
  ],
  // `keyed` is reached at the station, when the device's CSR is stored, in the same visit.
  lifecycle: REGISTERED_FIRST,
  keyDeliveries: STRATEGY_KEY_DELIVERIES['device-csr'],
};
