/** Profiles for tests: the shipped demo profile, or variants of it built in a temp config. */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { getProfile, loadConfig, type ResolvedProfile } from '../../src/config/load.js';
import { ROOT } from './cli.js';
import { tempDir } from './home.js';

export function demoProfile(): ResolvedProfile {
  return getProfile(loadConfig({ env: {} }), 'demo');
}

/** A profile named `test` with the demo's template and `overrides` applied. */
export function profileWith(overrides: Record<string, unknown>): ResolvedProfile {
  const dir = tempDir('provline-profile-');
  const file = join(dir, 'provline.config.yaml');
  writeFileSync(
    file,
    stringify({
      profiles: {
        test: {
          thingName: 'sensor-{serial}',
          template: join(ROOT, 'config/templates/demo-bulk.json'),
          policyName: 'provline-demo-device',
          ...overrides,
        },
      },
    }),
  );
  return getProfile(loadConfig({ file, env: {} }), 'test');
}
