/**
 * `provline jitr-activator --profile <p>`: the JITR activator of a profile, run locally against
 * the AWS IoT stand-in (workers/jitr-activator.ts); with `--print-config` the Lambda's
 * environment for that profile; with `--package <zip>` the Lambda deployment package.
 *
 * The factory CA certificate comes from the HSM (the profile's `ca`; the PIN from hsm.pinFile
 * or hsm.pinEnv), or from `--ca-cert` files, which then replace it (a rotated CA beside the
 * current one: pass both).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { compilePattern } from '../../batch/index.js';
import { makeClients, ensureResources } from '../../cloud/index.js';
import {
  ActivatorConfigError,
  CA_FILE,
  CA_VARIABLE,
  CONFIG_VARIABLE,
  HANDLER,
  compileConfig,
  lambdaPackage,
  pemCertificates,
  type ActivatorSettings,
  type CompiledConfig,
} from '../../cloud/jitr/index.js';
import { getProfile, type ResolvedProfile } from '../../config/index.js';
import { ProvlineError } from '../../core/index.js';
import { caModule as hsmCa } from '../../hsm/index.js';
import type { CommandContext } from '../context.js';
import { intOption } from '../options.js';
import { withHsm } from './hsm.js';

interface Options {
  profile?: string;
  caCert: string[];
  host: string;
  port: number;
  functionName?: string;
  printConfig?: boolean;
  package?: string;
}

/** The activator settings a profile implies; attributes over columns the CN does not carry are left out. */
export function activatorSettings(profile: ResolvedProfile): {
  settings: ActivatorSettings;
  leftOut: string[];
} {
  const thingNames = compilePattern(profile.thingName, `profiles.${profile.name}.thingName`).names;
  const attributes: Record<string, string> = {};
  const leftOut: string[] = [];
  for (const [name, pattern] of Object.entries(profile.attributes)) {
    const uses = compilePattern(pattern, `profiles.${profile.name}.attributes.${name}`).names;
    if (uses.every((u) => thingNames.includes(u))) attributes[name] = pattern;
    else leftOut.push(name);
  }
  return {
    settings: {
      profile: profile.name,
      thingName: profile.thingName,
      policyName: profile.policyName,
      ...(profile.thingType ? { thingType: profile.thingType } : {}),
      ...(Object.keys(profile.csrSubject).length ? { subject: profile.csrSubject } : {}),
      ...(Object.keys(attributes).length ? { attributes } : {}),
    },
    leftOut,
  };
}

function configError(profile: string, e: ActivatorConfigError): ProvlineError {
  return new ProvlineError(
    'JITR_CONFIG_INVALID',
    `profile ${profile} cannot drive the JITR activator: ${e.message}`,
    {
      kind: 'invalid-input',
      hint: 'The CN of each device certificate is its thing name; thing attributes may use only the thing-name placeholders. See docs/operations.md "JITR".',
      details: { profile, field: e.field },
    },
  );
}

async function caCertificates(
  c: CommandContext,
  profile: ResolvedProfile,
  files: string[],
): Promise<string[]> {
  if (files.length)
    return files.flatMap((f) => {
      let text: string;
      try {
        text = readFileSync(f, 'utf8');
      } catch (e) {
        throw new ProvlineError('INPUT_UNREADABLE', `cannot read the CA certificate file ${f}`, {
          kind: 'invalid-input',
          cause: e,
        });
      }
      const pems = pemCertificates(text);
      if (!pems.length)
        throw new ProvlineError('JITR_CONFIG_INVALID', `${f} holds no PEM certificate`, {
          kind: 'invalid-input',
          hint: 'Pass the factory CA certificate (-----BEGIN CERTIFICATE-----).',
        });
      return pems;
    });
  const ca = profile.ca;
  if (!ca)
    throw new ProvlineError(
      'CA_NOT_CONFIGURED',
      `profile ${profile.name} has no factory CA (no \`ca\` section) and no --ca-cert was given`,
      {
        kind: 'invalid-input',
        hint: 'Add the `ca` section (docs/hsm.md "Factory CA"), or pass the CA certificate with --ca-cert <file>.',
        details: { profile: profile.name },
      },
    );
  const view = await withHsm(c, (h) => hsmCa.describeCa(h, ca, new Date()));
  return [view.certificatePem];
}

function compile(profile: ResolvedProfile, settings: ActivatorSettings, cas: string[]): CompiledConfig {
  try {
    return compileConfig({ ...settings, caCertificates: cas });
  } catch (e) {
    if (e instanceof ActivatorConfigError) throw configError(profile.name, e);
    throw e;
  }
}

/** The stand-in's account and region (its health endpoint); refuses anything that is not the stand-in. */
async function standIn(endpoint: string): Promise<{ account: string; region: string }> {
  let res: Response;
  try {
    res = await fetch(`${endpoint}/_emulator/health`);
  } catch (e) {
    throw new ProvlineError('EMULATOR_UNREACHABLE', `the AWS IoT stand-in at ${endpoint} does not answer`, {
      cause: e,
      retryable: true,
      hint: 'Is it running? See `provline stack status`.',
    });
  }
  const health = (await res.json().catch(() => ({}))) as { ok?: boolean; account?: string; region?: string };
  if (!res.ok || !health.ok || !health.account || !health.region)
    throw new ProvlineError(
      'JITR_NEEDS_STAND_IN',
      `${endpoint} is not the AWS IoT stand-in (no /_emulator/health)`,
      {
        kind: 'invalid-input',
        hint: 'On AWS, deploy the activator as a Lambda (`npm run package:jitr-lambda`, docs/operations.md "JITR").',
      },
    );
  return { account: health.account, region: health.region };
}

export function registerJitrActivator(program: Command, ctx: () => CommandContext): void {
  program
    .command('jitr-activator')
    .description(
      'Activate JITR devices of a profile: certificates its factory CA signed are activated on their first connect, with their thing and policy; others are refused',
    )
    .option(
      '-p, --profile <name>',
      'product profile (its CA, thing-name pattern, attributes, type and policy)',
    )
    .option(
      '--ca-cert <file>',
      'factory CA certificate(s) to trust instead of the HSM one (repeatable)',
      (v: string, prev: string[]) => [...prev, v],
      [] as string[],
    )
    .option('--host <addr>', 'address the local function listens on', '127.0.0.1')
    .option('--port <n>', 'port of the local function (0 = any free port)', intOption('--port', 0, 65535), 0)
    .option('--function-name <name>', 'Lambda function name in its ARN (default provline-jitr-<profile>)')
    .option(
      '--print-config',
      "print the Lambda's environment for the profile (JSON for `aws lambda ... --environment`) and exit",
    )
    .option(
      '--package <zip>',
      'write the Lambda deployment package (with the CA certificates when --profile is given) and exit',
    )
    .addHelpText(
      'after',
      '\nLocally it serves the handler over HTTP, maps its ARN in the stand-in, creates the topic rule on\n$aws/events/certificates/registered/<caId>, and prints one JSON line per decision until SIGINT/SIGTERM.\nOn AWS the same handler runs as a Lambda (docs/operations.md "JITR").\n',
    )
    .action(async (opts: Options) => {
      const c = ctx();
      if (opts.package !== undefined && !opts.profile) return writePackage(c, opts.package, undefined);
      if (!opts.profile)
        throw new ProvlineError('USAGE', 'jitr-activator needs --profile <name>', {
          kind: 'usage',
          hint: 'Only --package works without a profile.',
        });
      const profile = getProfile(c.loaded, opts.profile);
      const { settings, leftOut } = activatorSettings(profile);
      const cas = await caCertificates(c, profile, opts.caCert);
      const config = compile(profile, settings, cas);
      if (leftOut.length)
        process.stderr.write(
          `provline jitr-activator: attributes ${leftOut.join(', ')} of profile ${profile.name} use CSV columns the certificate does not carry; activated things get the others only\n`,
        );
      if (opts.package !== undefined) return writePackage(c, opts.package, cas.join('\n'));
      if (opts.printConfig)
        return c.json({
          Variables: {
            [CONFIG_VARIABLE]: JSON.stringify(config.settings),
            [CA_VARIABLE]: `${cas.join('\n')}\n`,
          },
        });
      const stop = new Promise<string>((resolve) => {
        process.once('SIGTERM', () => resolve('SIGTERM'));
        process.once('SIGINT', () => resolve('SIGINT'));
      });
      const { done } = await startLocalActivator(c, profile, config, {
        host: opts.host,
        port: opts.port,
        ...(opts.functionName ? { functionName: opts.functionName } : {}),
        write: (line) => c.out.write(`${JSON.stringify(line)}\n`),
        stop,
      });
      await done;
    });
}

/** The activator's settings for a profile and its factory CA certificates, checked. */
export function activatorConfig(profile: ResolvedProfile, caPems: string[]): CompiledConfig {
  return compile(profile, activatorSettings(profile).settings, caPems);
}

/**
 * The activator as a local function of the stand-in: the profile's policy and thing type made
 * sure of, the handler served over HTTP, its ARN mapped and the topic rule made. Resolves once
 * it is ready; `done` settles when `stop` resolves and it has unmapped itself.
 */
export async function startLocalActivator(
  c: CommandContext,
  profile: ResolvedProfile,
  config: CompiledConfig,
  o: {
    host?: string;
    port?: number;
    functionName?: string;
    write: (line: object) => void;
    stop: Promise<string>;
  },
): Promise<{ done: Promise<void> }> {
  const endpoint = c.runtime.aws.endpoint;
  if (c.runtime.aws.useRealAws || !endpoint)
    throw new ProvlineError(
      'JITR_NEEDS_STAND_IN',
      'the local JITR activator runs against the AWS IoT stand-in only',
      {
        kind: 'invalid-input',
        hint: 'On AWS, deploy it as a Lambda (`npm run package:jitr-lambda`, docs/operations.md "JITR"); locally, run `provline stack up` first.',
      },
    );
  const base = endpoint.replace(/\/$/, '');
  const { account, region } = await standIn(base);
  const clients = makeClients(c.runtime.aws);
  let ready!: () => void;
  const isReady = new Promise<void>((resolve) => (ready = resolve));
  let done: Promise<void>;
  try {
    await ensureResources(clients, {
      policyName: profile.policyName,
      ...(profile.policyPath ? { policyDocument: readFileSync(profile.policyPath, 'utf8') } : {}),
      ...(profile.thingType ? { thingType: profile.thingType } : {}),
      thingGroups: [],
    });
    const name = o.functionName ?? `provline-jitr-${profile.name}`;
    done = c.entries
      .jitrActivator({
        clients,
        config,
        standInUrl: base,
        functionArn: `arn:aws:lambda:${region}:${account}:function:${name}`,
        ...(o.host ? { host: o.host } : {}),
        ...(o.port !== undefined ? { port: o.port } : {}),
        write: (line) => {
          o.write(line);
          if ((line as { msg?: string }).msg === 'jitr activator ready') ready();
        },
        stopSignal: o.stop,
      })
      .finally(() => clients.destroy());
  } catch (e) {
    clients.destroy();
    throw e;
  }
  await Promise.race([
    isReady,
    done.then(() => Promise.reject(new Error('the JITR activator stopped before it was ready'))),
  ]);
  return { done };
}

function writePackage(c: CommandContext, file: string, caPem: string | undefined): void {
  const here = dirname(fileURLToPath(import.meta.url));
  const { zip, files } = lambdaPackage(join(here, '../../cloud/jitr'), caPem);
  writeFileSync(file, zip);
  c.print(
    `wrote ${file} (${zip.length} bytes): ${files.join(', ')}\n  handler ${HANDLER}, runtime nodejs20.x or later; environment ${CONFIG_VARIABLE}${caPem ? ` and ${CA_VARIABLE}=${CA_FILE}` : ` and ${CA_VARIABLE}`}`,
  );
}
