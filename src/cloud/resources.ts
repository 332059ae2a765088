/**
 * The account-level resources a profile's template refers to, made sure of before a batch
 * registers anything: the device policy, the thing type and the thing groups. Each is looked
 * up first and created only when missing, so the call is safe to repeat and reports what it
 * created. Also the account's device data endpoint (iot:Data-ATS), which bundles carry.
 */
import {
  CreatePolicyCommand,
  CreateThingGroupCommand,
  CreateThingTypeCommand,
  DescribeEndpointCommand,
  DescribeThingGroupCommand,
  DescribeThingTypeCommand,
  GetPolicyCommand,
} from '@aws-sdk/client-iot';
import { ProvlineError } from '../core/index.js';
import { awsErrorName, awsFailure, isNotFoundAwsError } from './aws-errors.js';
import type { CloudClients } from './clients.js';
import { withRetries, type RetryPolicy } from './pacing.js';

export interface EnsureResourcesRequest {
  policyName: string;
  /** The policy document (JSON text); without it the policy must exist already. */
  policyDocument?: string;
  thingType?: string;
  thingGroups: string[];
}

export interface EnsureResourcesResult {
  /** What was created: `policy/<name>`, `thing-type/<name>`, `thing-group/<name>`. */
  created: string[];
}

/** One AWS call, repeated per `retry`; a missing resource is `undefined`, other failures throw. */
async function call<T>(
  what: string,
  fn: () => Promise<T>,
  retry: RetryPolicy = 'transient',
): Promise<T | undefined> {
  try {
    return await withRetries(fn, { retry, what });
  } catch (e) {
    if (isNotFoundAwsError(e)) return undefined;
    throw e;
  }
}

const alreadyExists = (e: unknown): boolean => awsErrorName(e) === 'ResourceAlreadyExistsException';

/** JSON text with object keys sorted, for comparing documents regardless of layout. */
function canonicalJson(text: string): string {
  const sort = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(sort)
      : typeof v === 'object' && v !== null
        ? Object.fromEntries(
            Object.keys(v)
              .sort()
              .map((k) => [k, sort((v as Record<string, unknown>)[k])]),
          )
        : v;
  try {
    return JSON.stringify(sort(JSON.parse(text)));
  } catch {
    return text.trim();
  }
}

async function ensurePolicy(c: CloudClients, name: string, document: string | undefined): Promise<boolean> {
  const get = (): Promise<{ policyDocument?: string } | undefined> =>
    call(`GetPolicy ${name}`, () => c.iot.send(new GetPolicyCommand({ policyName: name })));
  let existing = await get();
  let created = false;
  if (!existing) {
    if (document === undefined)
      throw new ProvlineError('POLICY_NOT_FOUND', `The IoT policy ${name} does not exist`, {
        details: { policyName: name },
        hint: 'Create it, or give the profile a policy document so that provline creates it.',
      });
    try {
      await call(
        `CreatePolicy ${name}`,
        () => c.iot.send(new CreatePolicyCommand({ policyName: name, policyDocument: document })),
        'throttling',
      );
      created = true;
    } catch (e) {
      if (awsErrorName(e) === 'MalformedPolicyException')
        throw awsFailure('POLICY_INVALID', `CreatePolicy ${name}`, e, { kind: 'invalid-input' });
      if (!alreadyExists(e)) throw e;
      existing = await get(); // created meanwhile by someone else: compare below
    }
  }
  if (
    existing &&
    document !== undefined &&
    canonicalJson(existing.policyDocument ?? '') !== canonicalJson(document)
  )
    throw new ProvlineError('POLICY_MISMATCH', `The IoT policy ${name} exists with a different document`, {
      details: { policyName: name },
      hint: 'AWS IoT policies are versioned by hand: update the policy in AWS (CreatePolicyVersion), or give the profile another policy name.',
    });
  return created;
}

async function ensureThingType(c: CloudClients, name: string): Promise<boolean> {
  const type = await call(`DescribeThingType ${name}`, () =>
    c.iot.send(new DescribeThingTypeCommand({ thingTypeName: name })),
  );
  if (type) {
    if (type.thingTypeMetadata?.deprecated)
      throw new ProvlineError('THING_TYPE_DEPRECATED', `The thing type ${name} is deprecated`, {
        details: { thingTypeName: name },
        hint: 'Things cannot be created with a deprecated type: undeprecate it (DeprecateThingType --undo-deprecate) or use another type.',
      });
    return false;
  }
  try {
    await call(
      `CreateThingType ${name}`,
      () => c.iot.send(new CreateThingTypeCommand({ thingTypeName: name })),
      'throttling',
    );
    return true;
  } catch (e) {
    if (alreadyExists(e)) return false;
    throw e;
  }
}

async function ensureThingGroup(c: CloudClients, name: string): Promise<boolean> {
  const group = await call(`DescribeThingGroup ${name}`, () =>
    c.iot.send(new DescribeThingGroupCommand({ thingGroupName: name })),
  );
  if (group) return false;
  try {
    // Idempotent for the same properties; a group made meanwhile with others is just as good.
    await call(`CreateThingGroup ${name}`, () =>
      c.iot.send(new CreateThingGroupCommand({ thingGroupName: name })),
    );
    return true;
  } catch (e) {
    if (alreadyExists(e)) return false;
    throw e;
  }
}

export async function ensureResources(
  c: CloudClients,
  r: EnsureResourcesRequest,
): Promise<EnsureResourcesResult> {
  const created: string[] = [];
  const step = async (label: string, what: string, fn: () => Promise<boolean>): Promise<void> => {
    try {
      if (await fn()) created.push(label);
    } catch (e) {
      throw awsFailure('AWS_REQUEST_FAILED', `Making sure of ${what}`, e);
    }
  };
  await step(`policy/${r.policyName}`, `policy ${r.policyName}`, () =>
    ensurePolicy(c, r.policyName, r.policyDocument),
  );
  const type = r.thingType;
  if (type) await step(`thing-type/${type}`, `thing type ${type}`, () => ensureThingType(c, type));
  for (const g of r.thingGroups)
    await step(`thing-group/${g}`, `thing group ${g}`, () => ensureThingGroup(c, g));
  return { created };
}

/** The account's device endpoint host (iot:Data-ATS; never the legacy iot:Data). */
export async function describeDataEndpoint(c: CloudClients): Promise<string> {
  const out = await withRetries(
    () => c.iot.send(new DescribeEndpointCommand({ endpointType: 'iot:Data-ATS' })),
    { retry: 'transient', what: 'DescribeEndpoint' },
  ).catch((e: unknown) => {
    throw awsFailure('AWS_REQUEST_FAILED', 'DescribeEndpoint', e);
  });
  if (!out.endpointAddress)
    throw new ProvlineError('AWS_REQUEST_FAILED', 'DescribeEndpoint returned no endpoint address', {
      details: { operation: 'DescribeEndpoint' },
    });
  return out.endpointAddress;
}
