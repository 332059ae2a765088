/**
 * `provline submit` with a claim profile: before the lot is submitted, the claim must exist and
 * be usable, the fleet template must serve the hook, and serials published before must keep
 * their rows; after, the lot's signed allow-list is published where the hook reads it and the
 * batch records the endpoint and root CA its bundles carry. On the local stack (the demo,
 * `provline rehearse`), the profile's claim is made and provline's hook served in-process.
 */
import { readFileSync } from 'node:fs';
import { validateCsvFile, planDevice, type BatchPlan, type PlanDevice } from '../../batch/index.js';
import { strategyFor } from '../../batch/strategies/index.js';
import {
  listThingNames,
  readHookRecords,
  readLots,
  outsideAllowList,
  serialOutcome,
  type SerialOutcome,
  clientIdPrefixOf,
  makeClients,
  requireBucket,
  type CloudClients,
  publicKeysFromPem,
  describeDataEndpoint,
} from '../../cloud/index.js';
import {
  iotCertificateStatus,
  makeHandler,
  mapInStandIn,
  startHookRunner,
  type HookDeps,
  type HookHandler,
  type HookRunner,
} from '../../cloud/hook/index.js';
import type { ResolvedProfile } from '../../config/index.js';
import { ProvlineError } from '../../core/index.js';
import { openHsm, type Hsm } from '../../hsm/index.js';
import {
  allowListRows,
  checkClaimProfile,
  checkLotUnchanged,
  ClaimStore,
  createClaim,
  HOOK_PREFIX,
  publishLot,
  retireDueClaims,
  type ClaimDeps,
  type ClaimState,
} from '../../jobs/index.js';
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
  /** An HSM the caller already holds open (the demo); otherwise one is opened when needed. */
  openedHsm?: Hsm,
): Promise<ClaimLot> {
  checkClaimProfile(profile);
  const cloud = makeClients(c.runtime.aws);
  let hsm: Hsm | undefined;
  const deps: ClaimDeps = {
    cloud,
    store: new ClaimStore(p.redis, p.prefix),
    hsm: async () => openedHsm ?? (hsm ??= await openHsm(await c.hsmSettings(), { env: c.env })),
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
    // A retiring claim whose grace period is over is turned off by whatever command runs next.
    await retireDueClaims(deps, profile);
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

/** The profile's claim on the local stack, and provline's hook serving it. */
export interface LocalClaim {
  state: ClaimState;
  /** The hook's local HTTP endpoint, mapped into the stand-in as `claim.hookArn`. */
  hook: HookRunner;
  /** Stops the hook (its server and connections) and releases the clients. */
  close(): Promise<void>;
}

/**
 * provline's hook as this process serves it (the demo, rehearse, `claim hook serve`): over the
 * configured S3 and IoT, trusting the claim's allow-list signing key.
 */
export function localHookHandler(
  cloud: CloudClients,
  state: ClaimState,
  extra: Pick<HookDeps, 'leaseMs' | 'log'> = {},
): HookHandler {
  return makeHandler({
    s3: cloud.s3,
    certificateStatus: iotCertificateStatus(cloud.iot),
    bucket: requireBucket(cloud.aws),
    prefix: HOOK_PREFIX,
    trusted: publicKeysFromPem(state.signingPublicKeyPem),
    ...extra,
  });
}

/**
 * The claim profile's claim on the local stack (made once: `claim create` is idempotent): the
 * fleet template with the hook, the allow-list signing key and the claim key in the HSM; and
 * provline's hook served in this process, mapped into the stand-in as `claim.hookArn`, as
 * `provline claim hook serve` does. Shared by the demo and `provline rehearse`.
 */
export async function startLocalClaim(
  c: CommandContext,
  p: PipelineHandles,
  hsm: Hsm,
  profile: ResolvedProfile,
): Promise<LocalClaim> {
  const cloud = makeClients(c.runtime.aws, { maxAttempts: 2 });
  let hook: HookRunner | undefined;
  try {
    const { state } = await createClaim(
      { cloud, store: new ClaimStore(p.redis, p.prefix), hsm: () => Promise.resolve(hsm) },
      profile,
    );
    hook = await startHookRunner(localHookHandler(cloud, state));
    await mapInStandIn(cloud.aws.endpoint!, profile.claim!.hookArn, hook.url);
    const runner = hook;
    return {
      state,
      hook: runner,
      close: async () => {
        await runner.close();
        cloud.destroy();
      },
    };
  } catch (e) {
    await hook?.close();
    cloud.destroy();
    throw e;
  }
}

/**
 * At a station's start for a claim profile: deactivates the retiring claims whose grace period
 * is over. A station without AWS access only logs why it could not (the next command will).
 */
export async function retireClaimsAtStation(
  c: CommandContext,
  redis: PipelineHandles['redis'],
  prefix: string,
  profile: ResolvedProfile,
): Promise<string[]> {
  if (!profile.claim || strategyFor(profile).name !== 'claim') return [];
  const cloud = makeClients(c.runtime.aws, { maxAttempts: 2 });
  try {
    const store = new ClaimStore(redis, prefix);
    return await retireDueClaims(
      { cloud, store, hsm: () => Promise.reject(new Error('not needed to retire a claim')) },
      profile,
    );
  } catch (e) {
    c.logger.warn({ profile: profile.name, err: (e as Error).message }, 'could not retire old claims');
    return [];
  } finally {
    cloud.destroy();
  }
}

/**
 * For a claim batch, each serial's outcome at the hook (with the client id its device connects
 * with, a denial of another serial it presented counts as its own); undefined for other batches.
 */
export async function claimOutcomes(
  c: CommandContext,
  p: PipelineHandles,
  batchId: string,
): Promise<((serial: string, clientId?: string) => SerialOutcome) | undefined> {
  const plan = await p.batches.plan(batchId);
  if (plan.profile.strategy !== 'claim') return undefined;
  const state = await new ClaimStore(p.redis, p.prefix).get(plan.profile.name);
  if (!state) return () => ({ claim: 'not seen', reason: 'the profile has no claim' });
  const cloud = makeClients(c.runtime.aws, { maxAttempts: 3 });
  try {
    const records = await readHookRecords(cloud.s3, requireBucket(cloud.aws), state.templateName);
    return (serial, clientId) => serialOutcome(records, serial, clientId);
  } finally {
    cloud.destroy();
  }
}

export interface ClaimReconciliation {
  templateName: string;
  provisioned: string[];
  denied: Array<{ serial: string; reason: string }>;
  notSeen: string[];
  /** Things named like the product's that no published lot of the template lists. */
  outside: string[];
}

/** The claim part of `reconcile` for a claim batch; undefined for other batches. */
export async function reconcileClaim(
  c: CommandContext,
  p: PipelineHandles,
  cloud: CloudClients,
  plan: BatchPlan,
): Promise<ClaimReconciliation | undefined> {
  if (plan.profile.strategy !== 'claim') return undefined;
  const state = await new ClaimStore(p.redis, p.prefix).get(plan.profile.name);
  if (!state) return undefined;
  const bucket = requireBucket(cloud.aws);
  const records = await readHookRecords(cloud.s3, bucket, state.templateName);
  const lots = await readLots(
    cloud.s3,
    bucket,
    state.templateName,
    publicKeysFromPem(state.signingPublicKeyPem),
  );
  const out: ClaimReconciliation = {
    templateName: state.templateName,
    provisioned: [],
    denied: [],
    notSeen: [],
    outside: [],
  };
  for (const d of plan.devices) {
    const o = serialOutcome(records, d.serial);
    if (o.claim === 'provisioned') out.provisioned.push(d.serial);
    else if (o.claim === 'denied') out.denied.push({ serial: d.serial, reason: o.reason });
    else out.notSeen.push(d.serial);
  }
  const profile = c.loaded.profiles.get(plan.profile.name);
  const prefix = profile ? clientIdPrefixOf(profile.thingName) : '';
  if (prefix) out.outside = outsideAllowList(await listThingNames(cloud, prefix), lots);
  return out;
}

export function claimLines(r: ClaimReconciliation): string[] {
  const lines = [
    `claim (template ${r.templateName}): ${r.provisioned.length} provisioned, ${r.denied.length} denied, ${r.notSeen.length} not seen yet; ${r.outside.length} thing(s) outside the allow-list`,
  ];
  for (const d of r.denied.slice(0, 50)) lines.push(`  denied ${d.serial}: ${d.reason}`);
  if (r.notSeen.length)
    lines.push(`  not seen: ${r.notSeen.slice(0, 50).join(', ')}${r.notSeen.length > 50 ? ', …' : ''}`);
  for (const t of r.outside.slice(0, 50))
    lines.push(`  outside the allow-list: thing ${t} (provisioned by something other than this hook?)`);
  return lines;
}
