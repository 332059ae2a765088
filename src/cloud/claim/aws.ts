/**
 * The AWS side of a claim (docs/claim.md): the claim certificate registered from a CSR the HSM
 * signed, its policy, the fleet template with its hook, turning claims off, temporary claims
 * for trusted users, and the hook's store in S3 (lot allow-lists in, decisions out).
 */
import {
  AttachPolicyCommand,
  CreateCertificateFromCsrCommand,
  CreateProvisioningClaimCommand,
  CreateProvisioningTemplateCommand,
  CreateProvisioningTemplateVersionCommand,
  DeleteProvisioningTemplateVersionCommand,
  DescribeProvisioningTemplateCommand,
  ListThingsCommand,
  ListProvisioningTemplateVersionsCommand,
  UpdateCertificateCommand,
  UpdateProvisioningTemplateCommand,
} from '@aws-sdk/client-iot';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { ProvlineError } from '../../core/index.js';
import { awsFailure, isNotFoundAwsError } from '../aws-errors.js';
import type { CloudClients } from '../clients.js';
import { hookKeys, openAllowList, type AllowList, type SignedAllowList } from '../hook/allow-list.js';
import type { KeyObject } from 'node:crypto';

/** Where provline keeps the hook's store in the bucket. */
export const HOOK_PREFIX = 'provline/claims';
/** AWS keeps at most 5 versions of a provisioning template. */
const MAX_TEMPLATE_VERSIONS = 5;

export interface RegisteredClaim {
  certificateId: string;
  certificateArn: string;
  certificatePem: string;
}

/** Registers the claim certificate for a CSR signed in the HSM (ACTIVE). */
export async function registerClaimCertificate(c: CloudClients, csrPem: string): Promise<RegisteredClaim> {
  try {
    const r = await c.iot.send(
      new CreateCertificateFromCsrCommand({ certificateSigningRequest: csrPem, setAsActive: true }),
    );
    return {
      certificateId: r.certificateId!,
      certificateArn: r.certificateArn!,
      certificatePem: r.certificatePem!,
    };
  } catch (e) {
    throw awsFailure('AWS_REQUEST_FAILED', 'CreateCertificateFromCsr for the claim', e);
  }
}

/** Region and account of an AWS IoT ARN. */
export function accountOf(arn: string): { region: string; account: string } {
  const m = /^arn:aws[a-z-]*:iot:([a-z0-9-]+):(\d{12}):/.exec(arn);
  if (!m) throw new ProvlineError('AWS_REQUEST_FAILED', `unexpected ARN from AWS IoT: ${arn}`);
  return { region: m[1]!, account: m[2]! };
}

export async function attachPolicy(c: CloudClients, policyName: string, target: string): Promise<void> {
  try {
    await c.iot.send(new AttachPolicyCommand({ policyName, target }));
  } catch (e) {
    throw awsFailure('AWS_REQUEST_FAILED', `AttachPolicy ${policyName}`, e);
  }
}

export async function setCertificateStatus(
  c: CloudClients,
  certificateId: string,
  status: 'ACTIVE' | 'INACTIVE',
): Promise<void> {
  try {
    await c.iot.send(new UpdateCertificateCommand({ certificateId, newStatus: status }));
  } catch (e) {
    throw awsFailure('AWS_REQUEST_FAILED', `UpdateCertificate ${certificateId} ${status}`, e);
  }
}

export interface FleetTemplateRequest {
  templateName: string;
  templateBody: string;
  roleArn: string;
  hookArn: string;
  description: string;
}

export interface FleetTemplateResult {
  action: 'created' | 'new-version' | 'unchanged';
  defaultVersionId: number;
  templateArn: string;
}

/**
 * Creates the fleet template (enabled, role, hook) or brings it up to date: a changed body
 * becomes a new default version (the oldest non-default one is deleted when AWS's five are
 * used); role, hook and `enabled` are set again either way.
 */
export async function ensureFleetTemplate(
  c: CloudClients,
  r: FleetTemplateRequest,
): Promise<FleetTemplateResult> {
  const hook = { targetArn: r.hookArn, payloadVersion: '2020-04-01' };
  let existing;
  try {
    existing = await c.iot.send(new DescribeProvisioningTemplateCommand({ templateName: r.templateName }));
  } catch (e) {
    if (!isNotFoundAwsError(e))
      throw awsFailure('AWS_REQUEST_FAILED', `DescribeProvisioningTemplate ${r.templateName}`, e);
  }
  try {
    if (!existing) {
      const made = await c.iot.send(
        new CreateProvisioningTemplateCommand({
          templateName: r.templateName,
          description: r.description,
          templateBody: r.templateBody,
          enabled: true,
          provisioningRoleArn: r.roleArn,
          preProvisioningHook: hook,
          type: 'FLEET_PROVISIONING',
        }),
      );
      return {
        action: 'created',
        defaultVersionId: made.defaultVersionId ?? 1,
        templateArn: made.templateArn!,
      };
    }
    if (existing.type && existing.type !== 'FLEET_PROVISIONING')
      throw new ProvlineError(
        'CLAIM_TEMPLATE_INVALID',
        `the provisioning template ${r.templateName} exists as a ${existing.type} template; a claim needs a FLEET_PROVISIONING one`,
        { kind: 'invalid-input', hint: 'Choose another claim.templateName.' },
      );
    let action: FleetTemplateResult['action'] = 'unchanged';
    let defaultVersionId = existing.defaultVersionId ?? 1;
    if (canonical(existing.templateBody ?? '') !== canonical(r.templateBody)) {
      const versions =
        (await c.iot.send(new ListProvisioningTemplateVersionsCommand({ templateName: r.templateName })))
          .versions ?? [];
      if (versions.length >= MAX_TEMPLATE_VERSIONS) {
        const oldest = versions
          .filter((v) => !v.isDefaultVersion)
          .sort((a, b) => (a.versionId ?? 0) - (b.versionId ?? 0))[0];
        if (oldest?.versionId !== undefined)
          await c.iot.send(
            new DeleteProvisioningTemplateVersionCommand({
              templateName: r.templateName,
              versionId: oldest.versionId,
            }),
          );
      }
      const v = await c.iot.send(
        new CreateProvisioningTemplateVersionCommand({
          templateName: r.templateName,
          templateBody: r.templateBody,
          setAsDefault: true,
        }),
      );
      action = 'new-version';
      defaultVersionId = v.versionId ?? defaultVersionId;
    }
    await c.iot.send(
      new UpdateProvisioningTemplateCommand({
        templateName: r.templateName,
        enabled: true,
        provisioningRoleArn: r.roleArn,
        preProvisioningHook: hook,
        description: r.description,
      }),
    );
    return { action, defaultVersionId, templateArn: existing.templateArn! };
  } catch (e) {
    throw awsFailure('AWS_REQUEST_FAILED', `the fleet template ${r.templateName}`, e);
  }
}

function canonical(text: string): string {
  try {
    return JSON.stringify(sortKeys(JSON.parse(text)));
  } catch {
    return text;
  }
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (typeof v === 'object' && v !== null)
    return Object.fromEntries(
      Object.keys(v)
        .sort()
        .map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]),
    );
  return v;
}

export interface TemporaryClaim {
  certificateId: string;
  certificatePem: string;
  privateKeyPem: string;
  expiration: Date;
}

/** CreateProvisioningClaim: a claim for an installer's app, valid five minutes. */
export async function issueTemporaryClaim(c: CloudClients, templateName: string): Promise<TemporaryClaim> {
  try {
    const r = await c.iot.send(new CreateProvisioningClaimCommand({ templateName }));
    return {
      certificateId: r.certificateId!,
      certificatePem: r.certificatePem!,
      privateKeyPem: r.keyPair!.PrivateKey!,
      expiration: r.expiration!,
    };
  } catch (e) {
    throw awsFailure('AWS_REQUEST_FAILED', `CreateProvisioningClaim ${templateName}`, e);
  }
}

/** Writes a lot's signed allow-list where the hook reads it. */
export async function publishAllowList(
  s3: S3Client,
  bucket: string,
  templateName: string,
  batchId: string,
  signed: SignedAllowList,
): Promise<string> {
  const key = hookKeys.lot(HOOK_PREFIX, templateName, batchId);
  try {
    await s3.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: key,
        Body: JSON.stringify(signed),
        ContentType: 'application/json',
      }),
    );
  } catch (e) {
    throw awsFailure('AWS_REQUEST_FAILED', `publishing the allow-list s3://${bucket}/${key}`, e);
  }
  return key;
}

async function listKeys(s3: S3Client, bucket: string, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(
      new ListObjectsV2Command({
        Bucket: bucket,
        Prefix: prefix,
        ...(token ? { ContinuationToken: token } : {}),
      }),
    );
    for (const o of page.Contents ?? []) if (o.Key) keys.push(o.Key);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

async function getJson(s3: S3Client, bucket: string, key: string): Promise<string> {
  const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return (await got.Body?.transformToString('utf8')) ?? '';
}

/** The published lots of a template, each verified against `trusted` (unverifiable ones are skipped). */
export async function readLots(
  s3: S3Client,
  bucket: string,
  templateName: string,
  trusted: ReadonlyMap<string, KeyObject>,
): Promise<AllowList[]> {
  try {
    const keys = await listKeys(s3, bucket, hookKeys.lots(HOOK_PREFIX, templateName));
    const lists: AllowList[] = [];
    for (const k of keys) {
      try {
        lists.push(openAllowList(await getJson(s3, bucket, k), trusted));
      } catch {
        /* an object the hook would not trust either */
      }
    }
    return lists;
  } catch (e) {
    throw awsFailure('AWS_REQUEST_FAILED', `reading the allow-lists of ${templateName}`, e);
  }
}

export interface UsedRecord {
  serial: string;
  batchId: string;
  thingName: string;
  certificateId: string;
  claimCertificateId: string;
  clientId: string;
  at: string;
}

export interface DeniedRecord {
  serial: string;
  code: string;
  reason: string;
  certificateId?: string;
  claimCertificateId?: string;
  clientId?: string;
  at: string;
}

export interface HookRecords {
  used: Map<string, UsedRecord>;
  denied: Map<string, DeniedRecord[]>;
}

/** What the hook decided for a template: each serial it allowed, every denial with its reason. */
export async function readHookRecords(
  s3: S3Client,
  bucket: string,
  templateName: string,
): Promise<HookRecords> {
  const used = new Map<string, UsedRecord>();
  const denied = new Map<string, DeniedRecord[]>();
  try {
    for (const k of await listKeys(s3, bucket, hookKeys.usedAll(HOOK_PREFIX, templateName))) {
      const r = JSON.parse(await getJson(s3, bucket, k)) as UsedRecord;
      used.set(r.serial, r);
    }
    for (const k of await listKeys(s3, bucket, hookKeys.deniedAll(HOOK_PREFIX, templateName))) {
      const r = JSON.parse(await getJson(s3, bucket, k)) as DeniedRecord;
      const list = denied.get(r.serial) ?? [];
      list.push(r);
      denied.set(r.serial, list);
    }
  } catch (e) {
    throw awsFailure('AWS_REQUEST_FAILED', `reading the hook's records of ${templateName}`, e);
  }
  return { used, denied };
}

/** Names of the account's things starting with `prefix` (ListThings, every page). */
export async function listThingNames(c: CloudClients, prefix: string): Promise<string[]> {
  const names: string[] = [];
  let nextToken: string | undefined;
  try {
    do {
      const page = await c.iot.send(
        new ListThingsCommand({ maxResults: 250, ...(nextToken ? { nextToken } : {}) }),
      );
      for (const t of page.things ?? []) if (t.thingName?.startsWith(prefix)) names.push(t.thingName);
      nextToken = page.nextToken;
    } while (nextToken);
  } catch (e) {
    throw awsFailure('AWS_REQUEST_FAILED', 'ListThings', e);
  }
  return names;
}
