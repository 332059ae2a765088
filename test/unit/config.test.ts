import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { getProfile, loadConfig } from '../../src/config/load.js';
import { ProvlineError } from '../../src/core/errors.js';
import { tempDir } from '../helpers/home.js';

function configFile(body: string): { dir: string; file: string } {
  const dir = tempDir('provline-config-');
  const file = join(dir, 'provline.config.yaml');
  writeFileSync(file, body);
  return { dir, file };
}

function problemsOf(fn: () => unknown): Array<{ path: string; source: string; message: string }> {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ProvlineError);
    expect((e as ProvlineError).code).toBe('CONFIG_INVALID');
    expect((e as ProvlineError).kind).toBe('invalid-input');
    return (e as ProvlineError).details.problems as Array<{ path: string; source: string; message: string }>;
  }
  throw new Error('expected a config error');
}

describe('config', () => {
  it('runs on embedded defaults with no file and no environment', () => {
    const loaded = loadConfig({ cwd: tempDir('provline-cwd-'), env: {} });
    expect(loaded.file).toBeUndefined();
    expect(loaded.config.hsm).toMatchObject({
      module: '/usr/lib/softhsm/libsofthsm2.so',
      token: 'provline',
      sessions: 8,
    });
    expect(loaded.home.endsWith('.provline')).toBe(true);
    const demo = getProfile(loaded, 'demo');
    expect(demo).toMatchObject({
      thingName: 'sensor-{serial}',
      keyType: 'P-256',
      keyDelivery: 'wrapped',
      registration: { mode: 'bulk', chunkSize: 1000 },
    });
    expect(demo.templatePath).toMatch(/config\/templates\/demo-bulk\.json$/);
  });

  it('reports every problem with its path and source, file and environment alike', () => {
    const { file } = configFile(
      [
        'hsm:',
        '  sessions: 0',
        '  tokn: x',
        'aws:',
        '  region: Mars',
        'profiles:',
        '  broken:',
        '    keyType: P-999',
        '    thingName: ""',
      ].join('\n'),
    );
    const problems = problemsOf(() => loadConfig({ file, env: { PROVLINE_REDIS_URL: 'http://nope' } }));
    const byPath = Object.fromEntries(problems.map((p) => [p.path, p.source]));
    expect(Object.keys(byPath).sort()).toEqual(['aws.region', 'hsm', 'hsm.sessions', 'redis.url']);
    expect(byPath['redis.url']).toBe('PROVLINE_REDIS_URL');
    expect(byPath['hsm.sessions']).toBe(file);
  });

  it('reports every problem of a profile with its full path', () => {
    const { file } = configFile(
      ['profiles:', '  broken:', '    keyType: P-999', '    thingName: ""', '    policyName: ok'].join('\n'),
    );
    const problems = problemsOf(() => loadConfig({ file, env: {} }));
    expect(problems.map((p) => p.path).sort()).toEqual([
      'profiles.broken.keyType',
      'profiles.broken.template',
      'profiles.broken.thingName',
    ]);
  });

  it('environment variables override the file, with types coerced', () => {
    const { file } = configFile('hsm:\n  sessions: 4\n');
    const loaded = loadConfig({
      file,
      env: {
        PROVLINE_HSM_SESSIONS: '16',
        PROVLINE_HSM_TOKEN: 'pkcs11:token=line3',
        PROVLINE_AWS_USE_REAL: 'yes',
      },
    });
    expect(loaded.config.hsm.sessions).toBe(16);
    expect(loaded.config.hsm.token).toBe('pkcs11:token=line3');
    expect(loaded.config.aws.useRealAws).toBe(true);
  });

  it('a YAML syntax error names the file and line', () => {
    const { file } = configFile('hsm:\n  module: [unclosed\n');
    const problems = problemsOf(() => loadConfig({ file, env: {} }));
    expect(problems[0]!.source).toMatch(/provline\.config\.yaml:\d+$/);
  });

  it('a missing template file is reported against the profile', () => {
    const { file } = configFile(
      ['profiles:', '  p1:', '    template: nowhere.json', '    policyName: x'].join('\n'),
    );
    const problems = problemsOf(() => loadConfig({ file, env: {} }));
    expect(problems).toEqual([
      expect.objectContaining({
        path: 'profiles.p1.template',
        message: expect.stringContaining('file not found'),
      }),
    ]);
  });

  it('device key delivery requires single registration', () => {
    const { dir, file } = configFile('');
    writeFileSync(join(dir, 't.json'), '{}');
    writeFileSync(
      file,
      ['profiles:', '  d:', '    template: t.json', '    policyName: x', '    keyDelivery: device'].join(
        '\n',
      ),
    );
    const problems = problemsOf(() => loadConfig({ file, env: {} }));
    expect(problems.map((p) => p.path)).toEqual(['profiles.d.registration.mode']);
  });

  it('an unknown profile lists the known ones', () => {
    try {
      getProfile(loadConfig({ env: {} }), 'nope');
      throw new Error('expected an error');
    } catch (e) {
      expect((e as ProvlineError).code).toBe('PROFILE_NOT_FOUND');
      expect((e as ProvlineError).hint).toContain('demo');
    }
  });
});
