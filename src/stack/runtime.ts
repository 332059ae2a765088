/**
 * Resolves what a command talks to: the configured services, or the local stack's where the
 * config leaves them out. Commands call this once, then pass plain settings inward.
 */
import { existsSync, realpathSync } from 'node:fs';
import type { LoadedConfig, AwsSettings, HsmSettings } from '../config/index.js';
import { ProvlineError } from '../core/index.js';
import { readState, stackPaths } from './home.js';
import { SOFTHSM_MODULE, STACK_TOKEN_LABEL } from './softhsm.js';
import { awsStatus } from './aws.js';

export type { AwsSettings, HsmSettings } from '../config/index.js';

/** Where Debian's ca-certificates keeps Amazon Root CA 1, the root of AWS IoT's ATS endpoints. */
export const AMAZON_ROOT_CA_FILE = '/etc/ssl/certs/Amazon_Root_CA_1.pem';

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
  // The embedded default: SoftHSM, the stack's token label, and no SOFTHSM2_CONF of the user's
  // (one that names the stack's own file, as `stack status` prints it, is the stack's).
  const userConf = env.SOFTHSM2_CONF && !sameFile(env.SOFTHSM2_CONF, paths.softhsm2Conf);
  const usesStackToken =
    config.hsm.module === SOFTHSM_MODULE &&
    !userConf &&
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
      ...(userConf && config.hsm.module === SOFTHSM_MODULE && !config.hsm.pinFile
        ? {
            pinNote: `SOFTHSM2_CONF is exported (${env.SOFTHSM2_CONF}) and is not the local stack's ${paths.softhsm2Conf}, so the stack's token and its pin file ${paths.userPinFile} are not used`,
          }
        : {}),
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
      // The local stand-in's endpoint is signed by its own root; a real AWS account's by Amazon's.
      rootCaFile:
        config.aws.rootCaFile ??
        (config.aws.useRealAws ? AMAZON_ROOT_CA_FILE : (stackAws.rootCaFile ?? AMAZON_ROOT_CA_FILE)),
    },
  };
}

/** Whether two paths name the same file (either may not exist). */
function sameFile(a: string, b: string): boolean {
  const real = (p: string): string => {
    try {
      return realpathSync(p);
    } catch {
      return p;
    }
  };
  return real(a) === real(b);
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
