/** Account setup before a batch registers, and stopping a batch that cannot be registered. */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { BatchPlan } from '../../batch/index.js';
import { strategyFor } from '../../batch/strategies/index.js';
import { describeDataEndpoint, ensureResources } from '../../cloud/index.js';
import { lintProfileTemplate } from '../../cloud/template/index.js';
import { isProvlineError, messageOf, ProvlineError } from '../../core/index.js';
import type { RegistrarDeps } from './deps.js';
import { failMove } from './moves.js';

/**
 * Makes sure the account has what the template refers to, and records the endpoint and root
 * CA for bundles. An invalid template or a conflicting policy stops the batch: every pending
 * device is failed with the reason.
 */
export async function prepare(deps: RegistrarDeps, plan: BatchPlan): Promise<boolean> {
  const meta = await deps.batches.meta(plan.batchId);
  if (meta.endpoint && meta.rootCaPem) return true;
  const flavor = strategyFor(plan.profile).certificate.templateFlavor;
  const problems = lintProfileTemplate(plan.profile.templateBody, flavor, plan.profile);
  try {
    if (problems.length)
      throw new ProvlineError(
        'TEMPLATE_INVALID',
        `the provisioning template is invalid: ${problems.map((p) => p.message).join('; ')}`,
        { kind: 'invalid-input' },
      );
    const rootCaPem = readRootCa(deps.settings.rootCaFile);
    await ensureResources(deps.cloud, {
      policyName: plan.profile.policyName,
      ...(plan.profile.policyDocument === undefined ? {} : { policyDocument: plan.profile.policyDocument }),
      ...(plan.profile.thingType === undefined ? {} : { thingType: plan.profile.thingType }),
      thingGroups: plan.profile.thingGroups,
    });
    const endpoint = await describeDataEndpoint(deps.cloud);
    await deps.batches.set(plan.batchId, { endpoint, rootCaPem });
    return true;
  } catch (e) {
    if (!isProvlineError(e) || e.retryable) throw e;
    await abortBatch(deps, plan.batchId, { code: e.code, message: e.message });
    return false;
  }
}

function readRootCa(file: string): string {
  try {
    const pem = readFileSync(file, 'utf8');
    new X509Certificate(pem);
    return pem;
  } catch (e) {
    throw new ProvlineError(
      'ROOT_CA_UNREADABLE',
      `cannot read the root CA certificate ${file}: ${messageOf(e)}`,
      {
        kind: 'invalid-input',
        cause: e,
        hint: 'Set aws.rootCaFile to the PEM file of the CA devices trust for the endpoint (Amazon Root CA 1).',
      },
    );
  }
}

/** Fails every device of the batch that has not been registered, with one reason. */
export async function abortBatch(
  deps: Pick<RegistrarDeps, 'journal' | 'batches' | 'log'>,
  batchId: string,
  error: { code: string; message: string },
): Promise<void> {
  deps.log?.error({ batchId, code: error.code }, `batch cannot be registered: ${error.message}`);
  await deps.batches.abort(batchId, error);
  for (const state of ['accepted', 'keyed', 'registering'] as const) {
    const serials = await deps.journal.inState(batchId, state);
    for (let i = 0; i < serials.length; i += 500)
      await deps.journal.transitionMany(
        serials.slice(i, i + 500).map((serial) => failMove(batchId, serial, error.code, error.message)),
      );
  }
}
