/**
 * The src/config room's public face (the settings schema, config files and profiles, the resolved settings types).
 * Other rooms import from here only; files inside the room import each other directly.
 */
export { getProfile, loadConfig } from './load.js';
export type { LoadedConfig, ResolvedProfile } from './load.js';
export {
  AWS_NAME_RE,
  CaSettingsSchema,
  ConfigSchema,
  DRIVERS,
  FACTORY_CA_STRATEGIES,
  KEY_DELIVERIES,
  KEY_TYPES,
  REGISTRATION_MODES,
  STRATEGY_KEY_DELIVERIES,
  STRATEGY_NAMES,
  strategyNameOf,
} from './schema.js';
export type {
  CaSettings,
  ClaimSettings,
  Config,
  DriverName,
  KeyDelivery,
  KeyType,
  Profile,
  StrategyName,
} from './schema.js';
export type { AwsSettings, HsmSettings } from './settings.js';
