/**
 * `provline submit` with a claim profile: before the lot is submitted, the claim must exist and
 * be usable, the fleet template must serve the hook, and serials published before must keep
 * their rows; after, the lot's signed allow-list is published where the hook reads it and the
 * batch records the endpoint and root CA its bundles carry.
 */
import { readFileSync } from 'node:fs';
import { validateCsvFile } from '../../batch/intake.js';
import { planDevice, type PlanDevice } from '../../batch/plan.js';
import { makeClients } from '../../cloud/clients.js';
import { describeDataEndpoint } from '../../cloud/resources.js';
import type { ResolvedProfile } from '../../config/load.js';
import { ProvlineError } from '../../core/errors.js';
import { openHsm, type Hsm } from '../../hsm/hsm.js';
import {
  allowListRows,
  checkClaimProfile,
  checkLotUnchanged,
  ClaimStore,
  publishLot,
  type ClaimDeps,
} from '../../jobs/claim.js';
import type { CommandContext } from '../context.js';
import type { PipelineHandles } from './open.js';

export interface ClaimLot {
  /** After submit: publish the allow-list, record endpoint and root CA on the batch. */
  publish(batchId: string): Promise<{ key: string; count: number }>;
  close(): void;
}

export async function prepareClaimLot(
  c: CommandContext,
  p: PipelineHandles,
  profile: ResolvedProfile,
  csvPath: string,
): Promise<ClaimLot> {
  checkClaimProfile(profile);
  const cloud = makeClients(c.runtime.aws);
  let hsm: Hsm | undefined;
  const deps: ClaimDeps = {
    cloud,
    store: new ClaimStore(p.redis, p.prefix),
    hsm: async () => (hsm ??= await openHsm(await c.hsmSettings(), { env: c.env })),
  };
  const close = (): void => {
    hsm?.close();
    cloud.destroy();
  };
  try {
    const state = await deps.store.get(profile.name);
    if (!state)
      throw new ProvlineError(
        'CLAIM_NOT_FOUND',
        `profile ${profile.name} has no claim yet; nothing was submitted`,
        {
          kind: 'invalid-input',
          hint: `Make it first: provline claim create --profile ${profile.name}`,
        },
      );
    if (!state.current)
      throw new ProvlineError(
        'CLAIM_REVOKED',
        `the claim of profile ${profile.name} was revoked and no new one made; nothing was submitted`,
        { kind: 'invalid-input', hint: `provline claim rotate --profile ${profile.name}` },
      );
    // Rows as the plan will make them (invalid rows are left to submit's own report).
    const rows: PlanDevice[] = [];
    await validateCsvFile(csvPath, profile, { onRow: (r) => void rows.push(planDevice(r)) });
    await checkLotUnchanged(deps, profile, allowListRows(rows));
  } catch (e) {
    close();
    throw e;
  }
  return {
    async publish(batchId) {
      const plan = await p.batches.plan(batchId);
      const published = await publishLot(deps, plan, profile, plan.devices);
      const endpoint = await describeDataEndpoint(cloud);
      const rootCaPem = readFileSync(c.runtime.aws.rootCaFile, 'utf8');
      await p.batches.set(batchId, { endpoint, rootCaPem });
      return published;
    },
    close,
  };
}
