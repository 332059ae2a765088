/**
 * The resolved settings the adapters take (src/hsm, src/cloud): plain data, decided once by
 * the runtime (src/stack/runtime.ts) from the configuration and the local stack, then passed
 * inward. Types only: no defaults here (those live in schema.ts).
 */

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
  /**
   * Why the stack's own pin file is not used, when it is not (an exported SOFTHSM2_CONF names
   * another token): said in the error when no PIN is found, so the operator sees the real cause.
   */
  pinNote?: string;
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
  /** The CA bundles carry for the MQTT endpoint: configured, the stand-in's, or Amazon's. */
  rootCaFile: string;
}
