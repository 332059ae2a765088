/**
 * The provisioning strategies, one module each (see strategy.ts for the shape). A profile names
 * its strategy; profiles written before strategies existed get the one their fields imply.
 */
import { STRATEGY_NAMES, strategyNameOf, type StrategyName } from '../../config/index.js';
import { bulk } from './bulk.js';
import { claim } from './claim.js';
import { deviceCsr } from './device-csr.js';
import { jitp } from './jitp.js';
import { jitr } from './jitr.js';
import { single } from './single.js';
import type { Strategy } from './strategy.js';

export { hsmWorkFor } from './strategy.js';
export type {
  BundleKey,
  CertificateSource,
  HsmWork,
  StationStep,
  Strategy,
  StrategyName,
} from './strategy.js';

export const STRATEGIES: Readonly<Record<StrategyName, Strategy>> = {
  bulk,
  single,
  'device-csr': deviceCsr,
  jitp,
  jitr,
  claim,
};

export { STRATEGY_NAMES };

/** The strategy a profile names, or the one its key delivery and registration mode imply. */
export function strategyFor(profile: Parameters<typeof strategyNameOf>[0]): Strategy {
  return STRATEGIES[strategyNameOf(profile)];
}
