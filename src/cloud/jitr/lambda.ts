/**
 * The JITR activator as an AWS Lambda function (Node.js runtime; `npm run package:jitr-lambda`
 * builds the zip, whose entry is `index.handler`). An IoT rule
 * `SELECT * FROM '$aws/events/certificates/registered/<caCertificateId>'` with a lambda action
 * invokes it with the registered event; docs/operations.md "JITR" sets it up.
 *
 * Environment:
 *   PROVLINE_JITR_CONFIG    JSON: {profile, thingName, subject, attributes, thingType, policyName}
 *                           (`provline jitr-activator --profile <p> --print-config` prints it)
 *   PROVLINE_JITR_CA_CERTS  the factory CA certificate(s), PEM text, or the name of a PEM file
 *                           in the package (relative to the handler)
 *
 * A decision is logged as one JSON line and returned; a refusal is an answer, not an error
 * (retrying cannot change it). A failed AWS call is thrown, so the Lambda service retries the
 * asynchronous invocation; the device's next connect sends the event again in any case.
 *
 * Imports node builtins and @aws-sdk/client-iot only, which the Lambda runtime provides.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { IoTClient } from '@aws-sdk/client-iot';
import { decisionLog, processEvent, type ActivationResult } from './activate.js';
import { ActivatorConfigError, compileConfig, type CompiledConfig } from './decide.js';

export const CONFIG_VARIABLE = 'PROVLINE_JITR_CONFIG';
export const CA_VARIABLE = 'PROVLINE_JITR_CA_CERTS';

/** Reads and checks the configuration from the environment (an ActivatorConfigError names the variable). */
export function configFromEnv(env: NodeJS.ProcessEnv, baseDir: string): CompiledConfig {
  const text = env[CONFIG_VARIABLE];
  if (!text) throw new ActivatorConfigError(CONFIG_VARIABLE, 'is not set');
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ActivatorConfigError(CONFIG_VARIABLE, `is not JSON: ${(e as Error).message}`);
  }
  let cas = env[CA_VARIABLE] ?? '';
  if (!cas)
    throw new ActivatorConfigError(
      CA_VARIABLE,
      'is not set (the factory CA certificate PEM, or a PEM file in the package)',
    );
  if (!cas.includes('-----BEGIN')) {
    const file = isAbsolute(cas) ? cas : join(baseDir, cas);
    try {
      cas = readFileSync(file, 'utf8');
    } catch (e) {
      throw new ActivatorConfigError(
        CA_VARIABLE,
        `names the file ${file}, which cannot be read: ${(e as Error).message}`,
      );
    }
  }
  return compileConfig({ ...(raw as object), caCertificates: cas });
}

let cached: { config: CompiledConfig; iot: IoTClient } | undefined;

/** The Lambda entry point. */
export async function handler(event: unknown): Promise<ActivationResult> {
  cached ??= {
    config: configFromEnv(process.env, dirname(fileURLToPath(import.meta.url))),
    iot: new IoTClient({}),
  };
  const result = await processEvent(cached.iot, cached.config, event);
  console.log(JSON.stringify(decisionLog(cached.config, result)));
  return result;
}
