/**
 * The provisioning strategies, one module each (see strategy.ts for the shape). A profile names
 * its strategy; profiles written before strategies existed get the one their fields imply.
 */
import type { Profile } from '../../config/schema.js';
import { bulk } from './bulk.js';
import { deviceCsr } from './device-csr.js';
import { single } from './single.js';
import type { Strategy, StrategyName } from './strategy.js';

export type {
  BundleKey,
  CertificateSource,
  HsmWork,
  StationStep,
  Strategy,
  StrategyName,
  StrategyProblem,
} from './strategy.js';

export const STRATEGIES: Readonly<Record<StrategyName, Strategy>> = {
  bulk,
  single,
  'device-csr': deviceCsr,
};

export const STRATEGY_NAMES = Object.keys(STRATEGIES) as StrategyName[];

/** The strategy a profile names, or the one its key delivery and registration mode imply. */
export function strategyFor(
  profile: Pick<Profile, 'keyDelivery' | 'registration'> & { strategy?: StrategyName },
): Strategy {
  if (profile.strategy !== undefined) return STRATEGIES[profile.strategy];
  if (profile.keyDelivery === 'device') return deviceCsr;
  return profile.registration.mode === 'single' ? single : bulk;
}
