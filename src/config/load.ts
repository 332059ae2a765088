/**
 * Config loading: parse (YAML file + PROVLINE_* environment) -> normalise -> validate, with
 * every problem reported by its path and its source, never just the first.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { ProvlineError, packageRoot } from '../core/index.js';
import {
  ConfigSchema,
  ProfileSchema,
  FACTORY_CA_STRATEGIES,
  STRATEGY_KEY_DELIVERIES,
  strategyNameOf,
  type Config,
  type Profile,
} from './schema.js';

export interface ConfigProblem {
  /** Dotted path of the offending option, e.g. `profiles.demo.keyType`. */
  path: string;
  message: string;
  /** File or environment variable the value came from. */
  source: string;
}

/** A profile with its name, where it came from, and file paths made absolute. */
export interface ResolvedProfile extends Profile {
  name: string;
  source: string;
  templatePath: string;
  policyPath: string | undefined;
  /** `claim.policy` resolved against the profile's file, when set. */
  claimPolicyPath?: string | undefined;
}

export interface LoadedConfig {
  config: Config;
  /** The config file read, if any. */
  file: string | undefined;
  /** Absolute path of the stack home. */
  home: string;
  profiles: Map<string, ResolvedProfile>;
}

/** Environment variables -> config paths. The PIN itself (PROVLINE_HSM_PIN) is not config. */
export const ENV_VARS: Record<string, { path: string[]; type: 'string' | 'number' | 'boolean' | 'list' }> = {
  PROVLINE_HOME: { path: ['home'], type: 'string' },
  PROVLINE_LOG_LEVEL: { path: ['logLevel'], type: 'string' },
  PROVLINE_REDIS_URL: { path: ['redis', 'url'], type: 'string' },
  PROVLINE_REDIS_PREFIX: { path: ['redis', 'prefix'], type: 'string' },
  PROVLINE_HSM_MODULE: { path: ['hsm', 'module'], type: 'string' },
  PROVLINE_HSM_TOKEN: { path: ['hsm', 'token'], type: 'string' },
  PROVLINE_HSM_PIN_FILE: { path: ['hsm', 'pinFile'], type: 'string' },
  PROVLINE_HSM_SESSIONS: { path: ['hsm', 'sessions'], type: 'number' },
  PROVLINE_AWS_REGION: { path: ['aws', 'region'], type: 'string' },
  PROVLINE_AWS_ENDPOINT: { path: ['aws', 'endpoint'], type: 'string' },
  PROVLINE_AWS_S3_ENDPOINT: { path: ['aws', 's3Endpoint'], type: 'string' },
  PROVLINE_AWS_PROFILE: { path: ['aws', 'profile'], type: 'string' },
  PROVLINE_AWS_CREDENTIALS_FILE: { path: ['aws', 'credentialsFile'], type: 'string' },
  PROVLINE_AWS_BUCKET: { path: ['aws', 'bucket'], type: 'string' },
  PROVLINE_AWS_ROLE_ARN: { path: ['aws', 'roleArn'], type: 'string' },
  PROVLINE_AWS_USE_REAL: { path: ['aws', 'useRealAws'], type: 'boolean' },
  PROVLINE_AWS_ROOT_CA_FILE: { path: ['aws', 'rootCaFile'], type: 'string' },
  PROVLINE_WORKER_LOCK_MS: { path: ['workers', 'lockMs'], type: 'number' },
  PROVLINE_WORKER_HSM_CONCURRENCY: { path: ['workers', 'hsmConcurrency'], type: 'number' },
  PROVLINE_PROFILE_DIRS: { path: ['profileDirs'], type: 'list' },
};

export interface LoadOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Explicit config file (the CLI's --config); otherwise PROVLINE_CONFIG or ./provline.config.yaml. */
  file?: string;
}

export function loadConfig(options: LoadOptions = {}): LoadedConfig {
  const cwd = options.cwd ?? process.cwd();
  const env = options.env ?? process.env;
  const problems: ConfigProblem[] = [];

  const explicit = options.file ?? env.PROVLINE_CONFIG;
  const defaultFile = join(cwd, 'provline.config.yaml');
  const file = explicit ? resolve(cwd, explicit) : existsSync(defaultFile) ? defaultFile : undefined;
  if (explicit && file && !existsSync(file)) {
    throw new ProvlineError('CONFIG_NOT_FOUND', `config file not found: ${file}`, {
      kind: 'invalid-input',
      hint: 'Check --config / PROVLINE_CONFIG, or remove it to run on the embedded defaults.',
    });
  }

  const raw: Record<string, unknown> = file ? readYamlObject(file, problems) : {};
  const sources = new Map<string, string>();
  for (const [name, spec] of Object.entries(ENV_VARS)) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    setPath(raw, spec.path, coerce(value, spec.type));
    sources.set(spec.path.join('.'), name);
  }

  const parsed = ConfigSchema.safeParse(raw);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const path = issue.path.map(String).join('.');
      problems.push({ path, message: issue.message, source: sourceFor(path, sources, file) });
    }
    throw configError(problems);
  }
  const config = parsed.data;
  const baseDir = file ? dirname(file) : cwd;
  const home = resolve(sources.has('home') ? cwd : baseDir, config.home);

  const profiles = new Map<string, ResolvedProfile>();
  const dirs = [
    join(packageRoot(), 'config', 'profiles'),
    ...config.profileDirs.map((d) => resolve(baseDir, d)),
  ];
  for (const dir of dirs) {
    if (!existsSync(dir)) {
      if (dir !== dirs[0])
        problems.push({
          path: 'profileDirs',
          message: `directory not found: ${dir}`,
          source: file ?? 'environment',
        });
      continue;
    }
    for (const entry of readdirSync(dir).sort()) {
      if (!/\.ya?ml$/.test(entry)) continue;
      const profileFile = join(dir, entry);
      const name = basename(entry).replace(/\.ya?ml$/, '');
      const body = readYamlObject(profileFile, problems);
      addProfile(profiles, name, body, profileFile, dirname(profileFile), problems);
    }
  }
  for (const [name, body] of Object.entries(config.profiles)) {
    addProfile(profiles, name, body, file ?? 'config', baseDir, problems, `profiles.${name}`);
  }
  if (problems.length) throw configError(problems);
  return { config, file, home, profiles };
}

/** Looks a profile up, with the list of known ones in the error. */
export function getProfile(loaded: LoadedConfig, name: string): ResolvedProfile {
  const profile = loaded.profiles.get(name);
  if (!profile) {
    const known = [...loaded.profiles.keys()].sort().join(', ') || '(none)';
    throw new ProvlineError('PROFILE_NOT_FOUND', `unknown profile "${name}"`, {
      kind: 'invalid-input',
      hint: `Known profiles: ${known}. Add config/profiles/${name}.yaml or a profiles.${name} entry.`,
    });
  }
  return profile;
}

function addProfile(
  into: Map<string, ResolvedProfile>,
  name: string,
  body: unknown,
  source: string,
  baseDir: string,
  problems: ConfigProblem[],
  prefix = `profiles.${name}`,
): void {
  const parsed = ProfileSchema.safeParse(body ?? {});
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      problems.push({ path: [prefix, ...issue.path.map(String)].join('.'), message: issue.message, source });
    }
    return;
  }
  const p = parsed.data;
  const templatePath = resolve(baseDir, p.template);
  const policyPath = p.policy === undefined ? undefined : resolve(baseDir, p.policy);
  const claimPolicyPath = p.claim?.policy === undefined ? undefined : resolve(baseDir, p.claim.policy);
  for (const [field, path] of [
    ['template', templatePath],
    ['policy', policyPath],
    ['claim.policy', claimPolicyPath],
  ] as const) {
    if (path !== undefined && !existsSync(path)) {
      problems.push({ path: `${prefix}.${field}`, message: `file not found: ${path}`, source });
    }
  }
  const strategy = strategyNameOf(p);
  const deliveries = STRATEGY_KEY_DELIVERIES[strategy];
  if (!deliveries.includes(p.keyDelivery)) {
    problems.push({
      path: `${prefix}.keyDelivery`,
      message: `strategy "${strategy}" carries out keyDelivery ${deliveries.map((d) => `"${d}"`).join(' or ')}, not "${p.keyDelivery}"${p.keyDelivery === 'device' ? ' (device keys need strategy "device-csr", "jitp" or "jitr")' : ''}`,
      source,
    });
  }
  if (strategy === 'device-csr' && p.registration.mode !== 'single') {
    problems.push({
      path: `${prefix}.registration.mode`,
      message:
        'strategy "device-csr" registers each device at the station: set registration.mode to "single"',
      source,
    });
  }
  if (FACTORY_CA_STRATEGIES.includes(strategy) && p.ca === undefined) {
    problems.push({
      path: `${prefix}.ca`,
      message: `strategy "${strategy}" signs device certificates with the profile's factory CA: set \`ca\` (at least label and subject.CN; see docs/hsm.md "Factory CA")`,
      source,
    });
  }
  if (strategy === 'claim' && !p.claim) {
    problems.push({
      path: `${prefix}.claim`,
      message:
        'strategy "claim" needs a `claim` section: {templateName: <fleet template name>, hookArn: <Lambda ARN of the pre-provisioning hook>}',
      source,
    });
  }
  into.set(name, {
    ...p,
    name,
    source,
    templatePath,
    policyPath,
    ...(claimPolicyPath ? { claimPolicyPath } : {}),
  });
}

function readYamlObject(file: string, problems: ConfigProblem[]): Record<string, unknown> {
  const doc = parseDocument(readFileSync(file, 'utf8'));
  if (doc.errors.length) {
    for (const err of doc.errors) {
      const line = err.linePos?.[0].line;
      problems.push({
        path: '',
        message: `YAML: ${err.message.split('\n')[0]}`,
        source: line ? `${file}:${line}` : file,
      });
    }
    return {};
  }
  const value: unknown = doc.toJS();
  if (value === null || value === undefined) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    problems.push({ path: '', message: 'expected a mapping at the top level', source: file });
    return {};
  }
  return value as Record<string, unknown>;
}

function coerce(value: string, type: 'string' | 'number' | 'boolean' | 'list'): unknown {
  switch (type) {
    case 'number':
      return /^-?\d+(\.\d+)?$/.test(value) ? Number(value) : value; // schema reports non-numbers
    case 'boolean':
      return ['1', 'true', 'yes', 'on'].includes(value.toLowerCase())
        ? true
        : ['0', 'false', 'no', 'off'].includes(value.toLowerCase())
          ? false
          : value;
    case 'list':
      return value.split(':').filter(Boolean);
    default:
      return value;
  }
}

function setPath(obj: Record<string, unknown>, path: string[], value: unknown): void {
  let cur = obj;
  for (const key of path.slice(0, -1)) {
    const next = cur[key];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) cur[key] = {};
    cur = cur[key] as Record<string, unknown>;
  }
  cur[path[path.length - 1]!] = value;
}

function sourceFor(path: string, envSources: Map<string, string>, file: string | undefined): string {
  for (const [p, name] of envSources) if (path === p || path.startsWith(`${p}.`)) return name;
  return file ?? 'defaults';
}

function configError(problems: ConfigProblem[]): ProvlineError {
  const lines = problems.map((p) => `  ${p.path || '(top)'}: ${p.message} [${p.source}]`);
  return new ProvlineError(
    'CONFIG_INVALID',
    `invalid configuration (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n${lines.join('\n')}`,
    {
      kind: 'invalid-input',
      details: { problems },
      hint: 'Fix each option listed; docs/configuration.md describes them all.',
    },
  );
}
