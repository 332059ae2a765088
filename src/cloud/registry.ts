/**
 * What `provline reconcile` compares with the journal: the registry's view of each recorded
 * device (`checkDevices`), certificates minted for a device's key that the journal does not
 * know (`findOrphans`: left by a crash between a registration call and its record), and the
 * clean-up of such a certificate (`removeOrphan`).
 *
 * Problems are report values, not errors: a device with problems is listed with them, and
 * only a failure to ask AWS throws.
 */
import {
  DeleteCertificateCommand,
  DescribeThingCommand,
  DetachThingPrincipalCommand,
  ListAttachedPoliciesCommand,
  ListPrincipalThingsCommand,
  ListThingPrincipalsCommand,
  UpdateCertificateCommand,
} from '@aws-sdk/client-iot';
import pLimit from 'p-limit';
import { isProvlineError } from '../core/index.js';
import { awsFailure, isNotFoundAwsError, isRetryableAwsError } from './aws-errors.js';
import {
  certificatesSince,
  describeCertificate,
  spkiOfDescription,
  spkiOfPublicKey,
  type ReadOptions,
} from './certificates.js';
import type { CloudClients } from './clients.js';
import { withRetries, type RetryPolicy } from './pacing.js';

export const REGISTRY_PROBLEM_CODES = [
  'THING_MISSING',
  'CERT_MISSING',
  'CERT_NOT_ACTIVE',
  'CERT_NOT_ATTACHED',
  'POLICY_NOT_ATTACHED',
] as const;
export type RegistryProblemCode = (typeof REGISTRY_PROBLEM_CODES)[number];

export interface RegistryProblem {
  code: RegistryProblemCode;
  message: string;
}

export interface RecordedDevice {
  serial: string;
  thingName: string;
  certificateId: string;
  policyName: string;
}

export interface DeviceCheck {
  serial: string;
  problems: RegistryProblem[];
}

/** `pacer` is taken before every call (up to four a device). */
export interface CheckOptions extends ReadOptions {
  /** Devices checked at once; default 8. */
  concurrency?: number;
  onProgress?(done: number, total: number): void;
}

/** One call, repeated per `retry`; a missing resource is `undefined`, other failures AWS_REQUEST_FAILED. */
async function read<T>(
  what: string,
  fn: () => Promise<T>,
  o: ReadOptions,
  retry: RetryPolicy = 'transient',
): Promise<T | undefined> {
  try {
    return await withRetries(fn, { retry, what, pacer: o.pacer, signal: o.signal });
  } catch (e) {
    if (isNotFoundAwsError(e)) return undefined;
    throw awsFailure('AWS_REQUEST_FAILED', what, e);
  }
}

/** Every item of a nextToken- or marker-paged list; undefined when its subject is missing. */
async function listAll(
  what: string,
  o: ReadOptions,
  page: (token: string | undefined) => Promise<{ items: string[]; next?: string }>,
): Promise<string[] | undefined> {
  const items: string[] = [];
  let token: string | undefined;
  do {
    const p = await read(what, () => page(token), o);
    if (!p) return undefined;
    items.push(...p.items);
    token = p.next;
  } while (token);
  return items;
}

const thingPrincipals = (c: CloudClients, thingName: string, o: ReadOptions): Promise<string[] | undefined> =>
  listAll(`ListThingPrincipals ${thingName}`, o, async (nextToken) => {
    const out = await c.iot.send(new ListThingPrincipalsCommand({ thingName, nextToken, maxResults: 250 }));
    return { items: out.principals ?? [], next: out.nextToken };
  });

const principalThings = (c: CloudClients, principal: string, o: ReadOptions): Promise<string[] | undefined> =>
  listAll('ListPrincipalThings', o, async (nextToken) => {
    const out = await c.iot.send(new ListPrincipalThingsCommand({ principal, nextToken, maxResults: 250 }));
    return { items: out.things ?? [], next: out.nextToken };
  });

const attachedPolicies = (c: CloudClients, target: string, o: ReadOptions): Promise<string[] | undefined> =>
  listAll('ListAttachedPolicies', o, async (marker) => {
    const out = await c.iot.send(new ListAttachedPoliciesCommand({ target, marker, pageSize: 250 }));
    return {
      items: (out.policies ?? []).flatMap((p) => (p.policyName ? [p.policyName] : [])),
      next: out.nextMarker,
    };
  });

const problem = (code: RegistryProblemCode, message: string): RegistryProblem => ({ code, message });

async function checkDevice(c: CloudClients, d: RecordedDevice, o: ReadOptions): Promise<RegistryProblem[]> {
  const problems: RegistryProblem[] = [];
  const thing = await read(
    `DescribeThing ${d.thingName}`,
    () => c.iot.send(new DescribeThingCommand({ thingName: d.thingName })),
    o,
  );
  if (!thing) problems.push(problem('THING_MISSING', `Thing ${d.thingName} does not exist`));
  const cert = await describeCertificate(c, d.certificateId, o);
  if (!cert) {
    problems.push(problem('CERT_MISSING', `Certificate ${d.certificateId} does not exist`));
    return problems;
  }
  if (cert.status !== 'ACTIVE')
    problems.push(
      problem('CERT_NOT_ACTIVE', `Certificate ${d.certificateId} is ${cert.status ?? 'of unknown status'}`),
    );
  const arn = cert.certificateArn ?? '';
  if (thing) {
    const principals = await thingPrincipals(c, d.thingName, o);
    if (principals && !principals.includes(arn))
      problems.push(
        problem('CERT_NOT_ATTACHED', `Certificate ${d.certificateId} is not attached to ${d.thingName}`),
      );
  }
  const policies = await attachedPolicies(c, arn, o);
  if (policies && !policies.includes(d.policyName))
    problems.push(
      problem(
        'POLICY_NOT_ATTACHED',
        `Policy ${d.policyName} is not attached to certificate ${d.certificateId}`,
      ),
    );
  return problems;
}

/** One entry per device, in the input order; `problems` is empty for a sound device. */
export async function checkDevices(
  c: CloudClients,
  devices: RecordedDevice[],
  o: CheckOptions = {},
): Promise<DeviceCheck[]> {
  const limit = pLimit(Math.max(1, o.concurrency ?? 8));
  let done = 0;
  return Promise.all(
    devices.map((d) =>
      limit(async () => {
        const problems = await checkDevice(c, d, o);
        o.onProgress?.(++done, devices.length);
        return { serial: d.serial, problems };
      }),
    ),
  );
}

export interface OrphanSearchDevice {
  serial: string;
  thingName: string;
  /** SubjectPublicKeyInfo PEM of the device's key. */
  publicKeyPem: string;
  /** The certificate the journal records; undefined if none was recorded. */
  certificateId?: string;
}

export interface FindOrphansRequest extends ReadOptions {
  devices: OrphanSearchDevice[];
  /** Certificates created before this are not looked at (leave minutes for clock skew). */
  since: Date;
  /** Called after each certificate looked at. */
  onProgress?(scanned: number, orphans: number): void;
}

export interface Orphan {
  certificateId: string;
  certificateArn: string;
  serial: string;
  status: string;
  /** Things the certificate is attached to. */
  things: string[];
}

/**
 * Certificates created since `since` for a listed device's key that are not the device's
 * recorded certificate. Recorded certificates are not described.
 */
export async function findOrphans(c: CloudClients, r: FindOrphansRequest): Promise<Orphan[]> {
  const byKey = new Map<string, OrphanSearchDevice>();
  for (const d of r.devices) byKey.set(spkiOfPublicKey(d.publicKeyPem).toString('base64'), d);
  const recorded = new Set(
    r.devices.flatMap((d) => (d.certificateId ? [d.certificateId.toLowerCase()] : [])),
  );
  const orphans: Orphan[] = [];
  let scanned = 0;
  for await (const summary of certificatesSince(c, r.since, r)) {
    scanned++;
    if (!recorded.has(summary.certificateId.toLowerCase())) {
      const cert = await describeCertificate(c, summary.certificateId, r);
      const device = cert?.certificatePem && byKey.get(spkiOfDescription(cert).toString('base64'));
      if (cert && device)
        orphans.push({
          certificateId: summary.certificateId,
          certificateArn: summary.certificateArn,
          serial: device.serial,
          status: cert.status ?? summary.status ?? 'UNKNOWN',
          things: (await principalThings(c, summary.certificateArn, r)) ?? [],
        });
    }
    r.onProgress?.(scanned, orphans.length);
  }
  return orphans;
}

export interface RemoveOrphanResult {
  /** False when the certificate was gone already. */
  deleted: boolean;
}

/**
 * Deactivates the certificate, detaches it from every thing (those listed and any attached
 * since), and deletes it (forceDelete: attached policies go with it). Safe to repeat.
 */
export async function removeOrphan(
  c: CloudClients,
  orphan: Pick<Orphan, 'certificateId' | 'certificateArn' | 'things'>,
  o: ReadOptions = {},
): Promise<RemoveOrphanResult> {
  const { certificateId, certificateArn: principal } = orphan;
  const write = <T>(
    what: string,
    fn: () => Promise<T>,
    retry: RetryPolicy = 'transient',
  ): Promise<T | undefined> => read(`${what} ${certificateId}`, fn, o, retry);
  try {
    const found = await write('UpdateCertificate', () =>
      c.iot.send(new UpdateCertificateCommand({ certificateId, newStatus: 'INACTIVE' })),
    );
    if (!found) return { deleted: false };
  } catch (e) {
    // REVOKED (or another status that cannot become INACTIVE) may be deleted as it is.
    if (!(isProvlineError(e) && e.details.errorName === 'CertificateStateException')) throw e;
  }
  const things = new Set([...orphan.things, ...((await principalThings(c, principal, o)) ?? [])]);
  for (const thingName of things)
    await write(`DetachThingPrincipal ${thingName}`, () =>
      c.iot.send(new DetachThingPrincipalCommand({ thingName, principal })),
    );
  // A detach takes a moment to reach every AWS host (aws-iot.md §5.2): retry a DeleteConflict.
  const deleted = await write(
    'DeleteCertificate',
    () => c.iot.send(new DeleteCertificateCommand({ certificateId, forceDelete: true })),
    (name) => isRetryableAwsError(name) || name === 'DeleteConflictException',
  );
  return { deleted: deleted !== undefined };
}
