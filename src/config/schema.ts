/**
 * The one configuration schema. Defaults are applied here and nowhere else; every option is
 * documented in docs/configuration.md (a test keeps the two in step).
 */
import { z } from 'zod';

export const KEY_TYPES = ['P-256', 'P-384', 'RSA-2048'] as const;
export type KeyType = (typeof KEY_TYPES)[number];

export const KEY_DELIVERIES = ['wrapped', 'plain', 'device'] as const;
export type KeyDelivery = (typeof KEY_DELIVERIES)[number];

export const DRIVERS = ['nordic-at', 'provline-serial-v1'] as const;
export type DriverName = (typeof DRIVERS)[number];

export const REGISTRATION_MODES = ['bulk', 'single'] as const;

/**
 * The provisioning strategies (one module each in src/batch/strategies) and the key deliveries
 * each can carry out. A profile that names no strategy gets the one its key delivery and
 * registration mode imply.
 */
export const STRATEGY_NAMES = ['bulk', 'single', 'device-csr', 'jitp', 'jitr', 'claim'] as const;
export type StrategyName = (typeof STRATEGY_NAMES)[number];
export const STRATEGY_KEY_DELIVERIES: Readonly<Record<StrategyName, readonly KeyDelivery[]>> = {
  bulk: ['wrapped', 'plain'],
  single: ['wrapped', 'plain'],
  'device-csr': ['device'],
  jitp: ['wrapped', 'plain', 'device'],
  jitr: ['wrapped', 'plain', 'device'],
  // claim: how the shared claim key reaches the device (the device makes its own key later).
  claim: ['wrapped', 'plain'],
};
/** Strategies whose device certificates the profile's factory CA signs (`ca` required). */
export const FACTORY_CA_STRATEGIES: readonly StrategyName[] = ['jitp', 'jitr'];

export function strategyNameOf(profile: {
  strategy?: StrategyName | undefined;
  keyDelivery: KeyDelivery;
  registration: { mode: (typeof REGISTRATION_MODES)[number] };
}): StrategyName {
  if (profile.strategy !== undefined) return profile.strategy;
  if (profile.keyDelivery === 'device') return 'device-csr';
  return profile.registration.mode === 'single' ? 'single' : 'bulk';
}

/** AWS IoT thing, thing-type and thing-group names (MODEL: 1..128, [a-zA-Z0-9:_-]+). */
export const AWS_NAME_RE = /^[a-zA-Z0-9:_-]{1,128}$/;
/** AWS IoT attribute names (≤128, [a-zA-Z0-9_.,@/:#-]+). */
export const AWS_ATTRIBUTE_NAME_RE = /^[a-zA-Z0-9_.,@/:#-]{1,128}$/;
/** Profile and template-parameter names: simple identifiers. */
const IDENT_RE = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;

const pattern = z.string().min(1, 'must not be empty');

/** A certificate subject as profiles write it: RDN attribute -> value. */
const subjectRecord = z.partialRecord(z.enum(['C', 'ST', 'L', 'O', 'OU', 'CN']), z.string().min(1).max(64));

/** The profile's factory CA, whose key lives in the HSM (docs/hsm.md "Factory CA"). */
export const CaSettingsSchema = z
  .object({
    /** CKA_LABEL of the CA key pair (and its certificate objects) on the token. */
    label: z.string().min(1).max(64),
    /** The token label the CA must be on; signing on any other token is refused. */
    token: z.string().min(1).optional(),
    keyType: z.enum(KEY_TYPES).default('P-256'),
    /** Validity of the self-signed CA certificate `ca create` makes. */
    validityDays: z.number().int().min(1).max(36_500).default(7300),
    /** basicConstraints pathLenConstraint; unset means no limit. */
    pathLen: z.number().int().min(0).max(16).optional(),
    subject: subjectRecord.refine((s) => s.CN !== undefined, 'CN is required'),
    /** Permitted directoryName subtrees written into the CA certificate (nameConstraints). */
    nameConstraints: z
      .object({ permitted: z.array(subjectRecord).min(1) })
      .strict()
      .optional(),
    /** Validity of each device certificate the CA signs (cut at the CA's own notAfter). */
    deviceValidityDays: z.number().int().min(1).max(36_500).default(3650),
  })
  .strict();
export type CaSettings = z.infer<typeof CaSettingsSchema>;

/** Fleet provisioning by claim (docs/claim.md): the claim, the fleet template and its hook. */
export const ClaimSettingsSchema = z
  .object({
    /** The fleet template's name in AWS IoT (the topic segment devices publish under). */
    templateName: z.string().regex(/^[0-9A-Za-z_-]{1,36}$/, '1..36 of A-Z a-z 0-9 _ -'),
    /** The pre-provisioning hook's Lambda function ARN (provline's deny-by-default hook). */
    hookArn: z
      .string()
      .regex(
        /^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]{1,64}(:[A-Za-z0-9_$-]+)?$/,
        'not a Lambda function ARN (arn:aws:lambda:<region>:<account>:function:<name>)',
      ),
    /** The template parameter that carries the serial in the device's RegisterThing request. */
    serialParameter: z.string().regex(IDENT_RE, 'not a valid parameter name').default('SerialNumber'),
    /**
     * The template parameter that carries the device's lot (the batch id the station writes to
     * it): the hook allows a serial only to a device of the serial's lot.
     */
    lotParameter: z.string().regex(IDENT_RE, 'not a valid parameter name').default('LotId'),
    /** How the device obtains its own certificate: `csr` (its own key, preferred) or `keys`. */
    deviceKey: z.enum(['csr', 'keys']).default('csr'),
    /** After `claim rotate`, the old claim stays ACTIVE this long, then is deactivated. */
    graceHours: z.number().min(0).max(8760).default(24),
    /** CKA_LABEL of the key that signs the lot allow-lists (made in the HSM, never exported). */
    signingKeyLabel: z.string().min(1).max(64).default('provline-allowlist'),
    /** A claim policy file to use instead of the generated one (checked like the generated one). */
    policy: z.string().min(1).optional(),
  })
  .strict();
export type ClaimSettings = z.infer<typeof ClaimSettingsSchema>;

export const ProfileSchema = z
  .object({
    description: z.string().default(''),
    /** Thing-name pattern; `{column}` placeholders take CSV columns, e.g. `sensor-{serial}`. */
    thingName: pattern.default('{serial}'),
    /** Thing attributes: attribute name -> pattern over CSV columns. */
    attributes: z
      .record(z.string().regex(AWS_ATTRIBUTE_NAME_RE, 'not a valid AWS IoT attribute name'), pattern)
      .default({}),
    /**
     * Template parameters: parameter name -> pattern. Besides CSV columns, the placeholders
     * `{thingName}` and `{csr}` are filled in by the registrar.
     */
    parameters: z.record(z.string().regex(IDENT_RE, 'not a valid parameter name'), pattern).default({}),
    thingType: z.string().regex(AWS_NAME_RE, 'not a valid AWS IoT thing type name').optional(),
    thingGroups: z
      .array(z.string().regex(AWS_NAME_RE, 'not a valid AWS IoT thing group name'))
      .max(10)
      .default([]),
    /** Provisioning template (JSON file), relative to the file that defines the profile. */
    template: z.string().min(1),
    /** Device policy document (JSON file) created under `policyName` if missing. */
    policy: z.string().min(1).optional(),
    policyName: z.string().regex(/^[\w+=,.@-]{1,128}$/, 'not a valid AWS IoT policy name'),
    keyType: z.enum(KEY_TYPES).default('P-256'),
    /**
     * How a serial becomes a connected device: `bulk`, `single`, `device-csr`, `jitp`, `jitr` or `claim`
     * (the last two sign with the profile's factory CA, `ca`). Unset: implied
     * by keyDelivery and registration.mode (device keys: device-csr; else the mode).
     */
    strategy: z.enum(STRATEGY_NAMES).optional(),
    keyDelivery: z.enum(KEY_DELIVERIES).default('wrapped'),
    /** Label of the transport KEK in the HSM (AES-256) that wraps exported device keys. */
    kekLabel: z.string().min(1).max(64).default('provline-kek'),
    /** The factory CA in the HSM that signs this product's device certificates (JITP/JITR). */
    ca: CaSettingsSchema.optional(),
    /** Fleet provisioning by claim (strategy `claim`). */
    claim: ClaimSettingsSchema.optional(),
    /** Extra CSR subject attributes besides CN (e.g. O, OU, C). */
    csrSubject: z.partialRecord(z.enum(['O', 'OU', 'C', 'L', 'ST']), z.string().min(1).max(64)).default({}),
    driver: z.enum(DRIVERS).default('provline-serial-v1'),
    /** Driver-specific settings, e.g. `secTag` for nordic-at. */
    driverSettings: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).default({}),
    /** What the flashing station does beyond writing and verifying. */
    station: z
      .object({
        /**
         * The device's first MQTT connect after it is verified (recorded as `connected`).
         * Unset: on whenever the driver can; false for a line whose devices have no network.
         */
        firstConnect: z.boolean().optional(),
      })
      .strict()
      .prefault({}),
    registration: z
      .object({
        mode: z.enum(REGISTRATION_MODES).default('bulk'),
        chunkSize: z.number().int().min(1).max(100_000).default(1000),
        /** Control-plane calls per second in `single` mode. */
        tps: z.number().positive().max(1000).default(10),
      })
      .prefault({}),
  })
  .strict();

export type Profile = z.infer<typeof ProfileSchema>;

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export const ConfigSchema = z
  .object({
    /** Where the local stack keeps its state (Redis data, SoftHSM token, stand-in state). */
    home: z.string().min(1).default('.provline'),
    logLevel: z.enum(LOG_LEVELS).default('info'),
    redis: z
      .object({
        /** An external Redis; when absent the local stack's Redis is used. */
        url: z
          .string()
          .regex(/^rediss?:\/\//, 'must start with redis:// or rediss://')
          .optional(),
        /** Prefix of every key provline writes (journal, batches, queues). */
        prefix: z
          .string()
          .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'letters, digits, _ . - only')
          .default('provline'),
      })
      .strict()
      .prefault({}),
    hsm: z
      .object({
        module: z.string().min(1).default('/usr/lib/softhsm/libsofthsm2.so'),
        /** Token label, or a PKCS#11 URI such as `pkcs11:token=provline`. */
        token: z.string().min(1).default('provline'),
        /** File holding the user PIN (mode 0600). Defaults to the local stack's pin file. */
        pinFile: z.string().min(1).optional(),
        /** Environment variable that may hold the user PIN instead of a file. */
        pinEnv: z
          .string()
          .regex(/^[A-Z_][A-Z0-9_]*$/)
          .default('PROVLINE_HSM_PIN'),
        /** Upper bound on PKCS#11 sessions provline opens (also capped by the token). */
        sessions: z.number().int().min(1).max(256).default(8),
      })
      .strict()
      .prefault({}),
    aws: z
      .object({
        region: z
          .string()
          .regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'not an AWS region name')
          .default('us-east-1'),
        /** Control-plane endpoint; when absent the local stand-in's, or AWS's if `useRealAws`. */
        endpoint: z.url().optional(),
        s3Endpoint: z.url().optional(),
        profile: z.string().min(1).optional(),
        credentialsFile: z.string().min(1).optional(),
        bucket: z
          .string()
          .regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'not a valid S3 bucket name')
          .optional(),
        roleArn: z.string().min(20).max(2048).optional(),
        useRealAws: z.boolean().default(false),
        /**
         * The CA devices must trust for the MQTT endpoint (PEM), put into every bundle. When
         * absent: the local stand-in's root CA, or Amazon Root CA 1 with `useRealAws`
         * (resolved with the stack, src/stack/runtime.ts).
         */
        rootCaFile: z.string().min(1).optional(),
      })
      .strict()
      .prefault({}),
    workers: z
      .object({
        /** Devices per HSM job. */
        hsmChunk: z.number().int().min(1).max(10_000).default(100),
        /** HSM jobs a worker process runs at once. */
        hsmConcurrency: z.number().int().min(1).max(64).default(2),
        /** Registration batches a worker process drives at once. */
        registrarConcurrency: z.number().int().min(1).max(64).default(4),
        /** BullMQ job lock: a job whose worker died is picked up again after about this long. */
        lockMs: z.number().int().min(1000).max(600_000).default(30_000),
        /** Flush a partial registration chunk when keyed devices have waited this long. */
        flushMs: z.number().int().min(0).max(600_000).default(2000),
        /** Registration rounds a device gets (throttled lines are retried in later tasks). */
        registrationRounds: z.number().int().min(1).max(100).default(5),
      })
      .strict()
      .prefault({}),
    /** Extra directories of `<name>.yaml` profile files, after the shipped config/profiles. */
    profileDirs: z.array(z.string().min(1)).default([]),
    /** Profiles defined inline; they override shipped profiles of the same name. */
    profiles: z.record(z.string().regex(IDENT_RE, 'not a valid profile name'), z.unknown()).default({}),
  })
  .strict();

export type Config = z.infer<typeof ConfigSchema>;
