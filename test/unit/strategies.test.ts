import { describe, expect, it } from 'vitest';
import { STRATEGIES, STRATEGY_NAMES, strategyFor } from '../../src/batch/strategies/index.js';
import { canTransition } from '../../src/batch/states.js';
import { STRATEGY_KEY_DELIVERIES } from '../../src/config/schema.js';

const profile = (keyDelivery: 'wrapped' | 'plain' | 'device', mode: 'bulk' | 'single') => ({
  keyDelivery,
  registration: { mode, chunkSize: 1000, tps: 10 },
});

describe('provisioning strategies', () => {
  it('a profile without a strategy gets the one its fields imply', () => {
    expect(strategyFor(profile('wrapped', 'bulk')).name).toBe('bulk');
    expect(strategyFor(profile('plain', 'single')).name).toBe('single');
    expect(strategyFor(profile('device', 'single')).name).toBe('device-csr');
    expect(strategyFor({ ...profile('plain', 'bulk'), strategy: 'single' }).name).toBe('single');
  });

  it.each(STRATEGY_NAMES)('%s: its life cycle is a path the journal allows, ending connected', (name) => {
    const { lifecycle } = STRATEGIES[name];
    expect(lifecycle[0]).toBe('accepted');
    expect(lifecycle.at(-1)).toBe('connected');
    for (let i = 1; i < lifecycle.length; i++) {
      expect(canTransition(lifecycle[i - 1], lifecycle[i]!), `${lifecycle[i - 1]} → ${lifecycle[i]}`).toBe(
        true,
      );
    }
  });

  it.each(STRATEGY_NAMES)('%s: carries out the key deliveries the configuration allows it', (name) => {
    expect(STRATEGIES[name].keyDeliveries).toEqual(STRATEGY_KEY_DELIVERIES[name]);
    for (const d of STRATEGIES[name].keyDeliveries) expect(STRATEGIES[name].bundleKey(d)).toBeDefined();
  });

  it('the bundle key and the station steps follow the key delivery', () => {
    expect(STRATEGIES.bulk.bundleKey('plain')).toBe('plain');
    expect(STRATEGIES.bulk.bundleKey('wrapped')).toBe('wrapped');
    expect(STRATEGIES['device-csr'].bundleKey('device')).toBe('none');
    expect(STRATEGIES.bulk.stationSteps({ keyDelivery: 'wrapped' })).toContain('proof-of-possession');
    expect(STRATEGIES.bulk.stationSteps({ keyDelivery: 'plain' })).not.toContain('proof-of-possession');
    expect(STRATEGIES['device-csr'].stationSteps({ keyDelivery: 'device' })).toContain('register-csr');
  });
});
