/**
 * Resolves what a command talks to: the configured services, or the local stack's where the
 * config leaves them out. Commands call this once, then pass plain settings inward.
 */
import { existsSync } from 'node:fs';
import type { LoadedConfig } from '../config/load.js';
import { ProvlineError } from '../core/errors.js';
import { readState, stackPaths } from './home.js';
import { SOFTHSM_MODULE, STACK_TOKEN_LABEL } from './softhsm.js';
import { awsStatus } from './aws.js';

export interface HsmSettings {
  module: string;
  /** Token label or PKCS#11 URI. */
  token: string;
  /** Where the user PIN comes from; the PIN itself is read only when logging in. */
  pinFile: string | undefined;
  pinEnv: string;
  sessions: number;
  /** SOFTHSM2_CONF to set before loading the module (the stack's token), if any. */
  softhsm2Conf: string | undefined;
  /** True when this is the local stack's SoftHSM token, which commands may create on demand. */
  localToken: boolean;
}

export interface AwsSettings {
  region: string;
  endpoint: string | undefined;
  s3Endpoint: string | undefined;
  credentialsFile: string | undefined;
  profile: string | undefined;
  bucket: string | undefined;
  roleArn: string | undefined;
  useRealAws: boolean;
  rootCaFile: string;
}

export interface Runtime {
  home: string;
  /** undefined when neither the config nor a running stack provides one. */
  redisUrl: string | undefined;
  hsm: HsmSettings;
  aws: AwsSettings;
}

export function resolveRuntime(loaded: LoadedConfig, env: NodeJS.ProcessEnv = process.env): Runtime {
  const { config, home } = loaded;
  const paths = stackPaths(home);
  const state = readState(paths);
  // The embedded default: SoftHSM, the stack's token label, no SOFTHSM2_CONF of the user's.
  const usesStackToken =
    config.hsm.module === SOFTHSM_MODULE &&
    !env.SOFTHSM2_CONF &&
    (existsSync(paths.softhsm2Conf) || (config.hsm.token === STACK_TOKEN_LABEL && !config.hsm.pinFile));
  const pinFromEnv = env[config.hsm.pinEnv] !== undefined;
  const stackAws = awsStatus(paths, state);
  return {
    home,
    redisUrl: config.redis.url ?? (state.redisPort ? `redis://127.0.0.1:${state.redisPort}` : undefined),
    hsm: {
      module: config.hsm.module,
      token: config.hsm.token,
      pinFile: config.hsm.pinFile ?? (pinFromEnv || !usesStackToken ? undefined : paths.userPinFile),
      pinEnv: config.hsm.pinEnv,
      sessions: config.hsm.sessions,
      softhsm2Conf: usesStackToken ? paths.softhsm2Conf : env.SOFTHSM2_CONF,
      localToken: usesStackToken,
    },
    aws: {
      region: config.aws.region,
      endpoint: config.aws.endpoint ?? (config.aws.useRealAws ? undefined : (stackAws.endpoint ?? undefined)),
      s3Endpoint:
        config.aws.s3Endpoint ?? (config.aws.useRealAws ? undefined : (stackAws.s3Endpoint ?? undefined)),
      credentialsFile: config.aws.credentialsFile ?? stackAws.credentialsFile ?? undefined,
      profile: config.aws.profile ?? stackAws.profile ?? undefined,
      bucket: config.aws.bucket ?? stackAws.bucket ?? undefined,
      roleArn: config.aws.roleArn ?? (config.aws.useRealAws ? undefined : (stackAws.roleArn ?? undefined)),
      useRealAws: config.aws.useRealAws,
      rootCaFile: config.aws.rootCaFile,
    },
  };
}

/** The Redis URL, or a clear error saying how to get one. */
export function requireRedis(rt: Runtime): string {
  if (rt.redisUrl) return rt.redisUrl;
  throw new ProvlineError(
    'REDIS_NOT_CONFIGURED',
    'no Redis to talk to: redis.url is not set and the local stack is not up',
    {
      hint: 'Run `provline stack up`, or set redis.url / PROVLINE_REDIS_URL.',
    },
  );
}
