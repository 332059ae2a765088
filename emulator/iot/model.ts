/**
 * The stand-in's records (what the store keeps) and the context every operation receives.
 * One module owns the collection names and the ARN formats.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { DeviceCa } from '../pki.js';
import type { Store } from '../store.js';

export const C = {
  meta: 'meta',
  things: 'things',
  thingTypes: 'thingTypes',
  thingGroups: 'thingGroups',
  policies: 'policies',
  certs: 'certs',
  cas: 'cas',
  templates: 'templates',
  /** Provisioning-template versions, key `<templateName>\n<versionId>`. */
  templateVersions: 'templateVersions',
  /** Fleet-provisioning ownership tokens, keyed by the SHA-256 of the token. */
  fleetTokens: 'fleetTokens',
  tasks: 'tasks',
} as const;

/** Pair relations (store.link): thing ↔ principal ARN, policy ↔ target, thing ↔ group. */
export const R = {
  thingPrincipal: 'rel.thingPrincipal',
  policyTarget: 'rel.policyTarget',
  thingGroup: 'rel.thingGroup',
} as const;

export interface AccountMeta {
  registrationCode: string;
  endpointPrefix: string;
}

export interface ThingRec {
  thingName: string;
  thingId: string;
  thingArn: string;
  thingTypeName?: string;
  attributes: Record<string, string>;
  version: number;
  billingGroupName?: string;
}

export interface ThingTypeRec {
  thingTypeName: string;
  thingTypeId: string;
  thingTypeArn: string;
  properties: { thingTypeDescription?: string; searchableAttributes?: string[] };
  creationDate: number;
  deprecated: boolean;
  deprecationDate?: number;
}

export interface ThingGroupRec {
  thingGroupName: string;
  thingGroupId: string;
  thingGroupArn: string;
  parentGroupName?: string;
  properties: { thingGroupDescription?: string; attributePayload?: { attributes: Record<string, string> } };
  version: number;
  creationDate: number;
}

export interface PolicyRec {
  policyName: string;
  policyArn: string;
  policyDocument: string;
  generationId: string;
  creationDate: number;
  lastModifiedDate: number;
}

export type CertStatus =
  'ACTIVE' | 'INACTIVE' | 'REVOKED' | 'PENDING_TRANSFER' | 'REGISTER_INACTIVE' | 'PENDING_ACTIVATION';

export interface CertRec {
  certificateId: string;
  certificateArn: string;
  certificatePem: string;
  status: CertStatus;
  caCertificateId?: string;
  certificateMode: 'DEFAULT' | 'SNI_ONLY';
  creationDate: number;
  lastModifiedDate: number;
  generationId: string;
  customerVersion: number;
  notBefore: number;
  notAfter: number;
  /** Provisioning-claim certificates are hidden from ListCertificates. */
  claim?: boolean;
}

export interface RegistrationConfig {
  templateBody?: string;
  roleArn?: string;
  templateName?: string;
}

export interface CaRec {
  certificateId: string;
  certificateArn: string;
  certificatePem: string;
  subject: string;
  status: 'ACTIVE' | 'INACTIVE';
  autoRegistrationStatus: 'ENABLE' | 'DISABLE';
  certificateMode: 'DEFAULT' | 'SNI_ONLY';
  creationDate: number;
  lastModifiedDate: number;
  generationId: string;
  customerVersion: number;
  notBefore: number;
  notAfter: number;
  registrationConfig?: RegistrationConfig;
}

export interface TemplateRec {
  templateName: string;
  templateArn: string;
  description?: string;
  templateBody: string;
  enabled: boolean;
  provisioningRoleArn: string;
  preProvisioningHook?: { payloadVersion?: string; targetArn: string };
  type: 'FLEET_PROVISIONING' | 'JITP';
  creationDate: number;
  lastModifiedDate: number;
  defaultVersionId: number;
  /** The highest version id ever given (ids are not reused after a delete); absent = 1. */
  lastVersionId?: number;
}

export interface TemplateVersionRec {
  templateName: string;
  versionId: number;
  templateBody: string;
  creationDate: number;
}

/** A fleet-provisioning certificateOwnershipToken (the token itself is never stored). */
export interface FleetTokenRec {
  /** SHA-256 (hex) of the token: the record's key. */
  tokenHash: string;
  certificateId: string;
  /** Epoch seconds. */
  issuedAt: number;
  expiresAt: number;
  /** The claim certificate and client id of the connection that created the certificate. */
  claimCertificateId: string;
  clientId: string;
  /** Set once RegisterThing succeeded with this token. */
  usedAt?: number;
  /** Set when the token expired unused (its certificate was then deleted if still unused). */
  expired?: boolean;
}

export type TaskStatus = 'InProgress' | 'Completed' | 'Failed' | 'Cancelled' | 'Cancelling';

export interface TaskRec {
  taskId: string;
  creationDate: number;
  lastModifiedDate: number;
  templateBody: string;
  inputFileBucket: string;
  inputFileKey: string;
  roleArn: string;
  status: TaskStatus;
  message?: string;
  successCount: number;
  failureCount: number;
  percentageProgress: number;
  /** Runner progress: byte offset of the next unread line, its 1-based number. */
  offset: number;
  nextLine: number;
  totalBytes: number;
  /** Lengths of the task's local report journals that belong to committed lines. */
  resultsBytes: number;
  errorsBytes: number;
  /** S3 keys of the report parts, once written (in the reports bucket). */
  reports?: { RESULTS: string[]; ERRORS: string[] };
}

/** What the operations need; injected so tests can pin the clock. */
export interface Ctx {
  store: Store;
  ca: DeviceCa;
  region: string;
  account: string;
  /** Epoch seconds (fractional), the wire format of every IoT timestamp. */
  now(): number;
}

export const arn = {
  thing: (ctx: Ctx, name: string): string => `arn:aws:iot:${ctx.region}:${ctx.account}:thing/${name}`,
  thingType: (ctx: Ctx, name: string): string => `arn:aws:iot:${ctx.region}:${ctx.account}:thingtype/${name}`,
  thingGroup: (ctx: Ctx, name: string): string =>
    `arn:aws:iot:${ctx.region}:${ctx.account}:thinggroup/${name}`,
  policy: (ctx: Ctx, name: string): string => `arn:aws:iot:${ctx.region}:${ctx.account}:policy/${name}`,
  cert: (ctx: Ctx, id: string): string => `arn:aws:iot:${ctx.region}:${ctx.account}:cert/${id}`,
  cacert: (ctx: Ctx, id: string): string => `arn:aws:iot:${ctx.region}:${ctx.account}:cacert/${id}`,
  template: (ctx: Ctx, name: string): string =>
    `arn:aws:iot:${ctx.region}:${ctx.account}:provisioningtemplate/${name}`,
};

/** The resource part of an IoT ARN: `{type, id}` for `arn:aws:iot:<r>:<a>:<type>/<id>`. */
export function parseArn(value: string): { type: string; id: string } | undefined {
  const m = /^arn:aws[a-z-]*:iot:[^:]*:[^:]*:([a-z]+)\/(.+)$/.exec(value);
  return m ? { type: m[1]!, id: m[2]! } : undefined;
}

export const newId = (): string => randomUUID();
export const hex = (bytes: number): string => randomBytes(bytes).toString('hex');

export interface OpRequest {
  /** Decoded path labels. */
  path: Record<string, string>;
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
  body: Record<string, unknown>;
  requestId: string;
}

/** An operation returns the JSON body, or undefined for an empty 200. */
export type Handler = (req: OpRequest) => unknown;
