/**
 * Types of the provisioning-template evaluator (aws-iot.md §2). A template is parsed once
 * (`parseTemplate`) and evaluated per device (`evaluateTemplate`) into a `TemplatePlan`: the
 * resources to create or update, with every intrinsic function resolved. The plan is plain
 * data; applying it (creating things, certificates, policies) is the caller's business.
 */

export type OverrideAction = 'DO_NOTHING' | 'REPLACE' | 'FAIL' | 'MERGE';

/** Which flavour of template this is; decides a few rules (see docs/emulator.md). */
export type TemplateFlavor = 'bulk' | 'register-thing' | 'jitp' | 'fleet';

export interface ParsedTemplate {
  parameters: Record<string, { type: string; default?: string }>;
  mappings: Record<string, Record<string, Record<string, unknown>>>;
  resources: Array<{
    logicalId: string;
    type: ResourceType;
    properties: Record<string, unknown>;
    overrideSettings: Record<string, unknown>;
  }>;
  deviceConfiguration: Record<string, unknown> | undefined;
}

export type ResourceType = 'AWS::IoT::Thing' | 'AWS::IoT::Certificate' | 'AWS::IoT::Policy';

export interface ThingPlan {
  logicalId: string;
  thingName: string;
  thingTypeName?: string;
  /** Flat name → value map (the template form, not the API's attributePayload). */
  attributes?: Record<string, string>;
  thingGroups?: string[];
  billingGroup?: string;
  /** What to do for each property when the thing exists; keys are the property names. */
  overrides: {
    AttributePayload: OverrideAction;
    ThingTypeName: OverrideAction;
    ThingGroups: OverrideAction;
    BillingGroup: OverrideAction;
  };
}

export type CertificateSource =
  | { kind: 'csr'; certificateSigningRequest: string }
  | { kind: 'id'; certificateId: string }
  | { kind: 'pem'; certificatePem: string; caCertificatePem?: string };

export interface CertificatePlan {
  logicalId: string;
  source: CertificateSource;
  /** Upper-cased; undefined when the template gives none (new certificates default to ACTIVE). */
  status?: 'ACTIVE' | 'INACTIVE';
  overrides: { Status: OverrideAction };
}

export interface PolicyPlan {
  logicalId: string;
  /** Given name, or (document only) the 40-hex SHA-1 of the document, upper case. */
  policyName: string;
  /** Present when the template carries the document (as a JSON string). */
  policyDocument?: string;
}

export interface TemplatePlan {
  thing?: ThingPlan;
  certificate?: CertificatePlan;
  policies: PolicyPlan[];
  /** Fleet templates only; flat string values. */
  deviceConfiguration?: Record<string, string>;
}

/** A template problem, carrying the AWS exception name and message it maps to. */
export class TemplateError extends Error {
  constructor(
    message: string,
    /** Where in the template (a JSON-pointer-like path), for lint output. */
    readonly path: string = '',
    readonly errorName: 'InvalidRequestException' = 'InvalidRequestException',
  ) {
    super(message);
    this.name = 'TemplateError';
  }
}
