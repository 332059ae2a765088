/**
 * `claim`: fleet provisioning by claim (docs/claim.md). Nothing is made per serial before the
 * station: the station writes the product's claim certificate and key (wrapped or plain, like
 * device keys), the fleet template's name, the endpoint and the device's parameters; the device
 * then makes its own key, obtains its certificate with CreateCertificateFromCsr over MQTT and
 * registers itself with RegisterThing, through provline's deny-by-default pre-provisioning hook,
 * which allows each serial of a submitted lot once.
 */
import { STRATEGY_KEY_DELIVERIES } from '../../config/index.js';
import type { Strategy } from './strategy.js';

export const claim: Strategy = {
  name: 'claim',
  summary:
    'the station writes a claim; the device provisions itself over MQTT (CreateCertificateFromCsr, RegisterThing) through the lot allow-list hook',
  hsm: 'nothing',
  certificate: { by: 'device', call: 'fleet', templateFlavor: 'fleet' },
  bundleKey: (keyDelivery) => (keyDelivery === 'plain' ? 'plain' : 'wrapped'),
  stationSteps: () => ['identify', 'write-claim', 'read-back', 'fleet-provision', 'first-connect'],
  // `connected`: the device registered itself through the hook and connected as its thing.
  lifecycle: ['accepted', 'flashed', 'verified', 'connected'],
  keyDeliveries: STRATEGY_KEY_DELIVERIES.claim,
};
