/**
 * Fleet provisioning by claim, the operations (docs/claim.md): `claim create | rotate | revoke |
 * status | issue` and the lot's allow-list at submit. The claim state of a profile is one JSON
 * value in Redis (`<prefix>:claim:<profile>`): certificates, the claim key wrapped under the
 * KEK, never a plaintext key. The HSM makes the claim key and signs allow-lists; AWS IoT holds
 * the certificate, its policy and the fleet template; S3 holds what the hook reads and writes.
 */
import type { Redis } from 'ioredis';
import type { ClaimView, BatchPlan, PlanDevice } from '../batch/index.js';
import { strategyFor } from '../batch/strategies/index.js';
import {
  accountOf,
  attachPolicy,
  ensureFleetTemplate,
  HOOK_PREFIX,
  issueTemporaryClaim,
  publishAllowList,
  readHookRecords,
  readLots,
  registerClaimCertificate,
  setCertificateStatus,
  type FleetTemplateResult,
  type HookRecords,
  type TemporaryClaim,
  claimPolicy,
  claimPolicyGaps,
  clientIdPrefixOf,
  deactivated,
  dueForDeactivation,
  revoked,
  rotated,
  type ClaimCredential,
  type ClaimState,
  claimTemplateProblems,
  requireBucket,
  requireRoleArn,
  type CloudClients,
  ensureResources,
  hookKeys,
  publicKeysFromPem,
  rowsDigest,
  sealAllowList,
  type AllowedDevice,
  type AllowList,
} from '../cloud/index.js';
import type { ResolvedProfile, ClaimSettings } from '../config/index.js';
import { ProvlineError } from '../core/index.js';
import { allowListSigner, createClaimKey } from '../hsm/index.js';
import type { Hsm } from '../hsm/index.js';
import { readText } from './submit.js';

export type { ClaimState, ClaimCredential };

/** The claim settings of a claim profile, or CLAIM_NOT_CONFIGURED. */
export function claimOf(
  profile: Pick<ResolvedProfile, 'name' | 'claim' | 'strategy' | 'keyDelivery' | 'registration'>,
): ClaimSettings {
  if (profile.claim && strategyFor(profile).name === 'claim') return profile.claim;
  throw new ProvlineError(
    'CLAIM_NOT_CONFIGURED',
    `profile ${profile.name} does not provision by claim (it needs \`strategy: claim\` and a \`claim\` section)`,
    {
      kind: 'invalid-input',
      hint: 'Add `strategy: claim` and `claim: {templateName: <name>, hookArn: <Lambda ARN>}` to the profile (docs/claim.md).',
      details: { profile: profile.name },
    },
  );
}

/** What a station needs of a profile's claim: its current claim, or none (revoked, not made). */
export function claimViewOf(state: ClaimState | undefined): ClaimView | undefined {
  const c = state?.current;
  if (!state || !c) return undefined;
  return {
    claimCertificateId: c.certificateId,
    claimCertificatePem: c.certificatePem,
    claimWrappedKey: c.wrappedKey,
    kekLabel: c.kekLabel,
    templateName: state.templateName,
    serialParameter: state.serialParameter,
    ...(state.lotParameter ? { lotParameter: state.lotParameter } : {}),
    deviceKey: state.deviceKey,
  };
}

/** The claim states in Redis. */
export class ClaimStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private key(profile: string): string {
    return `${this.prefix}:claim:${profile}`;
  }

  async get(profile: string): Promise<ClaimState | undefined> {
    const text = await this.redis.get(this.key(profile));
    return text ? (JSON.parse(text) as ClaimState) : undefined;
  }

  /** The profile's current claim for stations (stationJournal's `claimOf`). */
  async view(profile: string): Promise<ClaimView | undefined> {
    return claimViewOf(await this.get(profile));
  }

  async put(state: ClaimState): Promise<void> {
    await this.redis.set(this.key(state.profile), JSON.stringify(state));
  }
}

export interface ClaimDeps {
  cloud: CloudClients;
  store: ClaimStore;
  hsm: () => Promise<Hsm>;
  now?: () => Date;
}

const nowOf = (d: ClaimDeps): Date => (d.now ?? (() => new Date()))();

/** The profile parameters the hook sets from the CSV (and why one cannot be). */
function hookParameters(profile: ResolvedProfile): string[] {
  const bad = Object.entries(profile.parameters).filter(([, v]) => v.includes('{csr}'));
  if (bad.length)
    throw new ProvlineError(
      'CLAIM_TEMPLATE_INVALID',
      `profile ${profile.name}: parameter ${bad[0]![0]} uses {csr}, which a claim lot does not have (the device sends its own CSR over MQTT)`,
      { kind: 'invalid-input', hint: 'Remove the {csr} parameter from a claim profile.' },
    );
  return Object.keys(profile.parameters);
}

/** The checks that need no AWS call: the template serves the hook and the devices. */
export function checkClaimProfile(profile: ResolvedProfile): {
  settings: ClaimSettings;
  templateBody: string;
} {
  const settings = claimOf(profile);
  const templateBody = readText(profile.templatePath, 'fleet template');
  const problems = claimTemplateProblems(
    templateBody,
    hookParameters(profile),
    settings.serialParameter,
    settings.lotParameter,
  );
  if (problems.length)
    throw new ProvlineError(
      'CLAIM_TEMPLATE_INVALID',
      `profile ${profile.name}: the fleet template ${profile.templatePath} cannot serve the claim:\n${problems.map((p) => `  - ${p}`).join('\n')}`,
      { kind: 'invalid-input', details: { template: profile.templatePath, problems } },
    );
  return { settings, templateBody };
}

/** What the stations write to each device from the claim state: its parameters' names, its key. */
const deviceSettings = (
  settings: ClaimSettings,
): Pick<ClaimState, 'serialParameter' | 'lotParameter' | 'deviceKey'> => ({
  serialParameter: settings.serialParameter,
  lotParameter: settings.lotParameter,
  deviceKey: settings.deviceKey,
});

const policyNameOf = (settings: ClaimSettings, certificateId: string): string =>
  `${settings.templateName}-claim-${certificateId.slice(0, 12)}`;

/** The claim policy for the profile as a document: its own file (`claim.policy`), or generated. */
function claimPolicyOf(
  profile: ResolvedProfile,
  settings: ClaimSettings,
  where: { region: string; account: string },
): unknown {
  if (!profile.claimPolicyPath)
    return claimPolicy({
      ...where,
      templateName: settings.templateName,
      clientIdPrefix: clientIdPrefixOf(profile.thingName),
    });
  const text = readText(profile.claimPolicyPath, 'claim policy');
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

/**
 * What the profile's claim policy (its own file, or the generated one) lacks for the whole
 * fleet exchange in this region and account, as sentences; none when it would let a device
 * provision itself. `provline rehearse` lints with it; `claim create` refuses on any.
 */
export function claimPolicyProblems(
  profile: ResolvedProfile,
  where: { region: string; account: string },
): string[] {
  const settings = claimOf(profile);
  return claimPolicyGaps(claimPolicyOf(profile, settings, where), {
    ...where,
    templateName: settings.templateName,
    clientIds: [`${clientIdPrefixOf(profile.thingName)}SN0001`],
    deviceKey: settings.deviceKey,
  });
}

/** The claim policy document for the profile (its own file, or generated), checked. */
function claimPolicyDocument(
  profile: ResolvedProfile,
  settings: ClaimSettings,
  where: { region: string; account: string },
): string {
  const gaps = claimPolicyProblems(profile, where);
  if (gaps.length)
    throw new ProvlineError(
      'CLAIM_POLICY_INVALID',
      `profile ${profile.name}: the claim policy${profile.claimPolicyPath ? ` ${profile.claimPolicyPath}` : ''} would not let a device provision itself; it lacks:\n${gaps.map((g) => `  - ${g}`).join('\n')}`,
      { kind: 'invalid-input', details: { gaps } },
    );
  return JSON.stringify(claimPolicyOf(profile, settings, where));
}

export interface ClaimCreated {
  state: ClaimState;
  made: boolean;
  template: FleetTemplateResult;
}

/** Makes a claim credential: key in the HSM, certificate ACTIVE, its policy attached. */
async function newCredential(
  deps: ClaimDeps,
  profile: ResolvedProfile,
  settings: ClaimSettings,
  where: { region: string; account: string },
): Promise<ClaimCredential> {
  const policyDocument = claimPolicyDocument(profile, settings, where);
  const hsm = await deps.hsm();
  const key = await createClaimKey(hsm, {
    name: `${settings.templateName}-claim`,
    keyType: profile.keyType,
    kekLabel: profile.kekLabel,
    subject: { O: 'provline claim', OU: settings.templateName },
  });
  const cert = await registerClaimCertificate(deps.cloud, key.csrPem);
  const policyName = policyNameOf(settings, cert.certificateId);
  await ensureResources(deps.cloud, { policyName, policyDocument, thingGroups: [] });
  await attachPolicy(deps.cloud, policyName, cert.certificateArn);
  return {
    ...cert,
    wrappedKey: key.wrappedKey,
    kekId: key.kekId,
    kekLabel: profile.kekLabel,
    keyType: profile.keyType,
    policyName,
    createdAt: nowOf(deps).toISOString(),
    status: 'ACTIVE',
  };
}

/** Account resources and the fleet template (with its hook); returns where they live. */
async function prepareAccount(
  deps: ClaimDeps,
  profile: ResolvedProfile,
  settings: ClaimSettings,
  templateBody: string,
): Promise<{ template: FleetTemplateResult; where: { region: string; account: string } }> {
  const policyDocument = profile.policyPath ? readText(profile.policyPath, 'device policy') : undefined;
  await ensureResources(deps.cloud, {
    policyName: profile.policyName,
    ...(policyDocument === undefined ? {} : { policyDocument }),
    ...(profile.thingType === undefined ? {} : { thingType: profile.thingType }),
    thingGroups: profile.thingGroups,
  });
  const template = await ensureFleetTemplate(deps.cloud, {
    templateName: settings.templateName,
    templateBody,
    roleArn: requireRoleArn(deps.cloud.aws),
    hookArn: settings.hookArn,
    description: `provline claim for profile ${profile.name}`,
  });
  return { template, where: accountOf(template.templateArn) };
}

/**
 * `claim create`: the fleet template and its hook, the allow-list signing key, and a claim
 * when the profile has none yet (an existing current claim is kept: run `claim rotate`).
 */
export async function createClaim(deps: ClaimDeps, profile: ResolvedProfile): Promise<ClaimCreated> {
  const { settings, templateBody } = checkClaimProfile(profile);
  const { template, where } = await prepareAccount(deps, profile, settings, templateBody);
  const signer = await allowListSigner(await deps.hsm(), settings.signingKeyLabel);
  await retireDueClaims(deps, profile);
  const existing = await deps.store.get(profile.name);
  if (existing?.current) {
    // The device-facing settings follow the profile (stations write them from the state).
    const state = { ...existing, ...deviceSettings(settings) };
    if (JSON.stringify(state) !== JSON.stringify(existing)) await deps.store.put(state);
    return { state, made: false, template };
  }
  // Check the policy before any key is made (nothing is made for a policy that cannot work).
  claimPolicyDocument(profile, settings, where);
  const current = await newCredential(deps, profile, settings, where);
  const state: ClaimState = {
    version: 1,
    profile: profile.name,
    templateName: settings.templateName,
    ...deviceSettings(settings),
    signingPublicKeyPem: signer.publicKeyPem,
    current,
    previous: existing?.previous ?? [],
  };
  await deps.store.put(state);
  return { state, made: true, template };
}

async function requireState(deps: ClaimDeps, profile: ResolvedProfile): Promise<ClaimState> {
  const state = await deps.store.get(profile.name);
  if (!state)
    throw new ProvlineError('CLAIM_NOT_FOUND', `profile ${profile.name} has no claim yet`, {
      kind: 'invalid-input',
      hint: `Make it: provline claim create --profile ${profile.name}`,
    });
  return state;
}

/** Deactivates the retiring claims whose grace period is over; returns their ids. */
async function retireDue(
  deps: ClaimDeps,
  state: ClaimState,
): Promise<{ state: ClaimState; deactivated: string[] }> {
  const due = dueForDeactivation(state, nowOf(deps));
  for (const c of due) await setCertificateStatus(deps.cloud, c.certificateId, 'INACTIVE');
  if (!due.length) return { state, deactivated: [] };
  const next = deactivated(state, new Set(due.map((c) => c.certificateId)));
  await deps.store.put(next);
  return { state: next, deactivated: due.map((c) => c.certificateId) };
}

/**
 * Deactivates the profile's retiring claims whose grace period is over. `claim status`,
 * `rotate`, `create`, `issue`, `submit` and `station` call it, so whichever runs next after the
 * grace period turns the old claim off. Returns the certificate ids it deactivated.
 */
export async function retireDueClaims(deps: ClaimDeps, profile: { name: string }): Promise<string[]> {
  const state = await deps.store.get(profile.name);
  if (!state) return [];
  return (await retireDue(deps, state)).deactivated;
}

/** `claim rotate`: a new claim now; the old one stays ACTIVE for the grace period. */
export async function rotateClaim(
  deps: ClaimDeps,
  profile: ResolvedProfile,
  graceHours?: number,
): Promise<{ state: ClaimState; deactivated: string[] }> {
  const { settings, templateBody } = checkClaimProfile(profile);
  const state = await requireState(deps, profile);
  const { where } = await prepareAccount(deps, profile, settings, templateBody);
  const next = await newCredential(deps, profile, settings, where);
  const after = rotated(
    { ...state, ...deviceSettings(settings) },
    next,
    nowOf(deps),
    graceHours ?? settings.graceHours,
  );
  await deps.store.put(after);
  return retireDue(deps, after);
}

/** `claim revoke`: the current claim is turned off at once (misuse). */
export async function revokeClaim(
  deps: ClaimDeps,
  profile: ResolvedProfile,
  reason: string,
): Promise<ClaimState> {
  claimOf(profile);
  const state = await requireState(deps, profile);
  if (!state.current)
    throw new ProvlineError('CLAIM_REVOKED', `profile ${profile.name} has no active claim to revoke`, {
      kind: 'invalid-input',
      hint: 'Make a new claim with `provline claim rotate`.',
    });
  await setCertificateStatus(deps.cloud, state.current.certificateId, 'INACTIVE');
  const next = revoked(state, nowOf(deps), reason);
  await deps.store.put(next);
  return next;
}

export interface ClaimStatusView {
  state: ClaimState;
  deactivated: string[];
  /** Devices the hook allowed, by claim certificate id ('temporary' for trusted-user claims). */
  usedBy: Record<string, number>;
  provisioned: number;
  denials: number;
  deniedByCode: Record<string, number>;
  recentDenials: Array<{ serial: string; code: string; reason: string; at: string }>;
  lots: number;
  allowed: number;
}

/** `claim status`: how many devices used each claim, the denials, and retirements that fell due. */
export async function claimStatus(deps: ClaimDeps, profile: ResolvedProfile): Promise<ClaimStatusView> {
  const settings = claimOf(profile);
  const { state, deactivated: retiredNow } = await retireDue(deps, await requireState(deps, profile));
  const bucket = requireBucket(deps.cloud.aws);
  const records = await readHookRecords(deps.cloud.s3, bucket, settings.templateName);
  const lots = await readLots(
    deps.cloud.s3,
    bucket,
    settings.templateName,
    publicKeysFromPem(state.signingPublicKeyPem),
  );
  const known = new Set(
    [state.current, ...state.previous].filter((c) => c !== undefined).map((c) => c.certificateId),
  );
  const usedBy: Record<string, number> = {};
  for (const u of records.used.values()) {
    const k = known.has(u.claimCertificateId) ? u.claimCertificateId : 'temporary';
    usedBy[k] = (usedBy[k] ?? 0) + 1;
  }
  const all = [...records.denied.values()].flat().sort((a, b) => (a.at < b.at ? 1 : -1));
  const deniedByCode: Record<string, number> = {};
  for (const d of all) deniedByCode[d.code] = (deniedByCode[d.code] ?? 0) + 1;
  return {
    state,
    deactivated: retiredNow,
    usedBy,
    provisioned: records.used.size,
    denials: all.length,
    deniedByCode,
    recentDenials: all
      .slice(0, 20)
      .map((d) => ({ serial: d.serial, code: d.code, reason: d.reason, at: d.at })),
    lots: lots.length,
    allowed: lots.reduce((n, l) => n + Object.keys(l.devices).length, 0),
  };
}

/** `claim issue`: a temporary claim for an installer's app, with the profile's claim policy. */
export async function issueClaim(
  deps: ClaimDeps,
  profile: ResolvedProfile,
): Promise<TemporaryClaim & { policyName: string }> {
  const settings = claimOf(profile);
  await retireDueClaims(deps, profile);
  const state = await requireState(deps, profile);
  const policyName =
    state.current?.policyName ?? state.previous.find((c) => c.status !== 'REVOKED')?.policyName;
  if (!policyName)
    throw new ProvlineError('CLAIM_REVOKED', `profile ${profile.name} has no claim policy in use`, {
      kind: 'invalid-input',
      hint: 'Make a claim first: `provline claim rotate --profile <p>`.',
    });
  const claim = await issueTemporaryClaim(deps.cloud, settings.templateName);
  await attachPolicy(deps.cloud, policyName, `${policyArnBase(state)}:cert/${claim.certificateId}`);
  return { ...claim, policyName };
}

function policyArnBase(state: ClaimState): string {
  const arn = (state.current ?? state.previous[0])!.certificateArn;
  return arn.slice(0, arn.lastIndexOf(':cert/'));
}

/** A lot's allow-list rows from its plan devices ({thingName} filled in). */
export function allowListRows(devices: Iterable<PlanDevice>): Record<string, AllowedDevice> {
  const rows: Record<string, AllowedDevice> = {};
  for (const d of devices) {
    const parameters: Record<string, string> = {};
    for (const [k, v] of Object.entries(d.parameters))
      parameters[k] = v.replaceAll('{thingName}', d.thingName);
    rows[d.serial] = { thingName: d.thingName, parameters };
  }
  return rows;
}

/**
 * Before a claim lot is submitted: rows of serials already published under this template must
 * be the same (a published row is never changed under a device). Throws CLAIM_LOT_CHANGED.
 */
export async function checkLotUnchanged(
  deps: ClaimDeps,
  profile: ResolvedProfile,
  rows: Record<string, AllowedDevice>,
): Promise<void> {
  const settings = claimOf(profile);
  const state = await requireState(deps, profile);
  const lots = await readLots(
    deps.cloud.s3,
    requireBucket(deps.cloud.aws),
    settings.templateName,
    publicKeysFromPem(state.signingPublicKeyPem),
  );
  const changed: string[] = [];
  for (const lot of lots)
    for (const [serial, row] of Object.entries(rows)) {
      const was = lot.devices[serial];
      if (!was) continue;
      if (rowsDigest({ [serial]: was }) !== rowsDigest({ [serial]: row }))
        changed.push(
          `serial ${serial}: lot ${lot.batchId} published ${describeRow(was)}; this CSV says ${describeRow(row)}`,
        );
    }
  if (changed.length)
    throw new ProvlineError(
      'CLAIM_LOT_CHANGED',
      `${changed.length} serial(s) of this CSV were published before with other rows; nothing was submitted:\n${changed
        .slice(0, 20)
        .map((c) => `  - ${c}`)
        .join('\n')}`,
      {
        kind: 'invalid-input',
        hint: 'Submit the lot as it was, or take the changed serials out of the CSV.',
      },
    );
}

function describeRow(r: AllowedDevice): string {
  const params = Object.entries(r.parameters)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');
  return `thing ${r.thingName}${params ? ` (${params})` : ''}`;
}

/** Signs and publishes a submitted lot's allow-list where the hook reads it. */
export async function publishLot(
  deps: ClaimDeps,
  plan: Pick<BatchPlan, 'batchId' | 'createdAt'> & { profile: { name: string } },
  profile: ResolvedProfile,
  devices: Iterable<PlanDevice>,
): Promise<{ key: string; count: number; state: ClaimState }> {
  const settings = claimOf(profile);
  const state = await requireState(deps, profile);
  if (!state.current)
    throw new ProvlineError(
      'CLAIM_REVOKED',
      `profile ${profile.name}'s claim was revoked; no lot can be published for it`,
      {
        kind: 'invalid-input',
        hint: `Make a new claim first: provline claim rotate --profile ${profile.name}`,
      },
    );
  const rows = allowListRows(devices);
  const list: AllowList = {
    version: 1,
    templateName: settings.templateName,
    batchId: plan.batchId,
    profile: profile.name,
    createdAt: plan.createdAt,
    serialParameter: settings.serialParameter,
    lotParameter: settings.lotParameter,
    rowsSha256: rowsDigest(rows),
    devices: rows,
  };
  const signer = await allowListSigner(await deps.hsm(), settings.signingKeyLabel, false);
  if (signer.publicKeyPem !== state.signingPublicKeyPem)
    throw new ProvlineError(
      'CLAIM_INVALID',
      `the allow-list signing key "${settings.signingKeyLabel}" is not the one the claim of ${profile.name} was made with`,
      {
        kind: 'invalid-input',
        hint: 'Restore the key on the token, or run `claim create` on the token that holds it.',
      },
    );
  const sealed = await sealAllowList(list, signer.keyId, (data) => signer.sign(data));
  const key = await publishAllowList(
    deps.cloud.s3,
    requireBucket(deps.cloud.aws),
    settings.templateName,
    plan.batchId,
    sealed,
  );
  return { key, count: Object.keys(rows).length, state };
}

/** What the hook knows about a template: its records and where they live. */
export async function hookRecords(deps: ClaimDeps, templateName: string): Promise<HookRecords> {
  return readHookRecords(deps.cloud.s3, requireBucket(deps.cloud.aws), templateName);
}

export { HOOK_PREFIX, hookKeys };
