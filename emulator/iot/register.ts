/**
 * Applying an evaluated template (RegisterThing, each bulk line, later JITP/fleet): the
 * side effects of aws-iot.md §2.4 in one store transaction, so a line either happens
 * completely or not at all. Failures of the workflow surface as
 * ResourceRegistrationFailureException ("Register thing workflow execution terminates due
 * to: …", the shape seen in real ERRORS reports); template and validation problems stay
 * InvalidRequestException.
 */
import {
  TemplateError,
  evaluateTemplate,
  parseTemplate,
  type ParsedTemplate,
  type TemplatePlan,
  type ThingPlan,
} from '../../src/cloud/template/index.js';
import { IotError, invalid } from '../errors.js';
import { RULES, Validation, checkPolicyDocument } from '../validate.js';
import { issueFromCsr, registerCertificate, setCertStatus } from './certs.js';
import { requiredStr, stringMap } from './members.js';
import {
  C,
  R,
  type CertRec,
  type Ctx,
  type Handler,
  type PolicyRec,
  type ThingRec,
  type ThingTypeRec,
} from './model.js';
import { attachPolicy, createPolicy } from './policies.js';
import { addThingToGroup, checkThingAttributes, createThing, sameMap } from './things.js';

export interface RegisterResult {
  certificatePem?: string;
  resourceArns: Record<string, string>;
}

const failure = (_ctx: Ctx, what: string): IotError =>
  new IotError(
    'ResourceRegistrationFailureException',
    `Register thing workflow execution terminates due to: ${what}`,
  );

/** Parses a template body, mapping template problems to InvalidRequestException. */
export function parseOrThrow(body: string): ParsedTemplate {
  try {
    return parseTemplate(body, 'bulk');
  } catch (e) {
    if (e instanceof TemplateError) throw invalid(e.message);
    throw e;
  }
}

/**
 * AWS's pseudo-parameters (aws-iot.md §2.3). AWS lets a template `Ref` them without declaring
 * them: the DG's fleet template example references `AWS::IoT::Certificate::Id` with no entry in
 * `Parameters`, and the value comes from the service (fleet, JITP) or from the caller's
 * `parameters` (RegisterThing, bulk). Declaring them stays allowed.
 */
export const PSEUDO_PARAMETERS: ReadonlySet<string> = new Set([
  'AWS::IoT::Certificate::Id',
  'AWS::IoT::Certificate::Country',
  'AWS::IoT::Certificate::Organization',
  'AWS::IoT::Certificate::OrganizationalUnit',
  'AWS::IoT::Certificate::DistinguishedNameQualifier',
  'AWS::IoT::Certificate::StateName',
  'AWS::IoT::Certificate::CommonName',
  'AWS::IoT::Certificate::SerialNumber',
]);

/** The template with every pseudo-parameter that has a value declared (if it was not). */
function withPseudoParameters(t: ParsedTemplate, parameters: Record<string, string>): ParsedTemplate {
  const missing = Object.keys(parameters).filter((k) => PSEUDO_PARAMETERS.has(k) && !t.parameters[k]);
  if (!missing.length) return t;
  const declared = { ...t.parameters };
  for (const k of missing) declared[k] = { type: 'String' };
  return { ...t, parameters: declared };
}

export function evaluateOrThrow(t: ParsedTemplate, parameters: Record<string, string>): TemplatePlan {
  try {
    return evaluateTemplate(withPseudoParameters(t, parameters), parameters);
  } catch (e) {
    if (e instanceof TemplateError) throw invalid(e.message);
    throw e;
  }
}

function applyThing(ctx: Ctx, plan: ThingPlan): ThingRec {
  const { store } = ctx;
  const existing = store.get<ThingRec>(C.things, plan.thingName);
  const checkType = (name: string): void => {
    const t = store.get<ThingTypeRec>(C.thingTypes, name);
    if (!t) throw failure(ctx, `Thing Type ${ctx.account}:${name} not found.`);
    if (t.deprecated) throw failure(ctx, `Thing Type ${ctx.account}:${name} is deprecated.`);
  };
  const checkGroups = (groups: string[]): void => {
    for (const g of groups)
      if (!store.has(C.thingGroups, g)) throw failure(ctx, `Thing Group ${ctx.account}:${g} not found.`);
  };
  if (plan.billingGroup !== undefined)
    throw failure(ctx, `Billing Group ${ctx.account}:${plan.billingGroup} not found.`);
  if (!existing) {
    if (plan.thingTypeName !== undefined) checkType(plan.thingTypeName);
    checkGroups(plan.thingGroups ?? []);
    const thing = createThing(ctx, {
      thingName: plan.thingName,
      attributes: plan.attributes ?? {},
      ...(plan.thingTypeName !== undefined ? { thingTypeName: plan.thingTypeName } : {}),
    });
    for (const g of plan.thingGroups ?? []) addThingToGroup(ctx, thing.thingName, g);
    return thing;
  }
  const conflict = (prop: string): IotError =>
    failure(ctx, `Thing ${plan.thingName} already exists and OverrideSettings.${prop} is FAIL.`);
  const next: ThingRec = { ...existing, attributes: { ...existing.attributes } };
  let changed = false;
  if (plan.attributes !== undefined && !sameMap(existing.attributes, plan.attributes)) {
    const o = plan.overrides.AttributePayload;
    if (o === 'FAIL') throw conflict('AttributePayload');
    if (o === 'REPLACE') next.attributes = { ...plan.attributes };
    if (o === 'MERGE') Object.assign(next.attributes, plan.attributes);
    changed ||= o !== 'DO_NOTHING';
  }
  if (plan.thingTypeName !== undefined && plan.thingTypeName !== existing.thingTypeName) {
    const o = plan.overrides.ThingTypeName;
    if (o === 'FAIL') throw conflict('ThingTypeName');
    if (o === 'REPLACE' || o === 'MERGE') {
      checkType(plan.thingTypeName);
      next.thingTypeName = plan.thingTypeName;
      changed = true;
    }
  }
  if (changed) {
    checkThingAttributes(next.attributes, next.thingTypeName !== undefined);
    next.version = existing.version + 1;
    store.put(C.things, next.thingName, next);
  }
  if (plan.thingGroups !== undefined) {
    const current = store.rightOf(R.thingGroup, plan.thingName);
    const differs =
      current.length !== plan.thingGroups.length || plan.thingGroups.some((g) => !current.includes(g));
    const o = plan.overrides.ThingGroups;
    if (differs && o === 'FAIL') throw conflict('ThingGroups');
    if (differs && (o === 'REPLACE' || o === 'MERGE')) {
      checkGroups(plan.thingGroups);
      if (o === 'REPLACE')
        for (const g of current)
          if (!plan.thingGroups.includes(g)) store.unlink(R.thingGroup, plan.thingName, g);
      for (const g of plan.thingGroups) addThingToGroup(ctx, plan.thingName, g);
    }
  }
  return next;
}

function applyCertificate(ctx: Ctx, plan: NonNullable<TemplatePlan['certificate']>): CertRec {
  const { source } = plan;
  if (source.kind === 'csr')
    return issueFromCsr(ctx, source.certificateSigningRequest, plan.status ?? 'ACTIVE');
  let cert: CertRec | undefined;
  let created = false;
  if (source.kind === 'id') {
    cert = ctx.store.get<CertRec>(C.certs, source.certificateId.toLowerCase());
    if (!cert) throw failure(ctx, `Certificate ${source.certificateId} not found.`);
  } else {
    try {
      cert = registerCertificate(
        ctx,
        source.certificatePem,
        source.caCertificatePem,
        plan.status ?? 'ACTIVE',
        source.caCertificatePem !== undefined,
      );
      created = true;
    } catch (e) {
      if (!(e instanceof IotError)) throw e;
      if (e.errorName === 'ResourceAlreadyExistsException')
        cert = ctx.store.get<CertRec>(C.certs, String(e.extra.resourceId))!;
      else if (e.errorName === 'CertificateValidationException' && source.caCertificatePem === undefined) {
        cert = registerCertificate(ctx, source.certificatePem, undefined, plan.status ?? 'ACTIVE', false);
        created = true;
      } else throw failure(ctx, e.message);
    }
  }
  if (!created && plan.status !== undefined && plan.status !== cert.status) {
    if (plan.overrides.Status === 'FAIL')
      throw failure(
        ctx,
        `Certificate ${cert.certificateId} already exists and OverrideSettings.Status is FAIL.`,
      );
    if (plan.overrides.Status === 'REPLACE') {
      try {
        setCertStatus(ctx, cert, plan.status);
      } catch (e) {
        throw failure(ctx, (e as Error).message);
      }
      cert = ctx.store.get<CertRec>(C.certs, cert.certificateId)!;
    }
  }
  return cert;
}

function applyPolicy(ctx: Ctx, name: string, document: string | undefined): PolicyRec {
  const existing = ctx.store.get<PolicyRec>(C.policies, name);
  if (document === undefined) {
    if (!existing) throw failure(ctx, `Policy ${ctx.account}:${name} not found.`);
    return existing;
  }
  if (existing) {
    if (existing.policyDocument !== document)
      throw failure(ctx, `Policy ${name} already exists with a different policy document.`);
    return existing;
  }
  try {
    checkPolicyDocument(document);
  } catch (e) {
    throw failure(ctx, (e as Error).message);
  }
  return createPolicy(ctx, name, document);
}

/** Applies a plan atomically and returns what RegisterThing returns. */
export function applyPlan(ctx: Ctx, plan: TemplatePlan): RegisterResult {
  return ctx.store.transaction(() => {
    const result: RegisterResult = { resourceArns: {} };
    const thing = plan.thing ? applyThing(ctx, plan.thing) : undefined;
    const cert = plan.certificate ? applyCertificate(ctx, plan.certificate) : undefined;
    const policies = plan.policies.map((p) => ({
      plan: p,
      rec: applyPolicy(ctx, p.policyName, p.policyDocument),
    }));
    if (cert) {
      for (const p of policies) {
        try {
          attachPolicy(ctx, p.rec.policyName, cert.certificateArn);
        } catch (e) {
          throw failure(ctx, (e as Error).message);
        }
      }
      if (thing) ctx.store.link(R.thingPrincipal, thing.thingName, cert.certificateArn);
      result.certificatePem = cert.certificatePem;
      result.resourceArns[plan.certificate!.logicalId] = cert.certificateArn;
    }
    if (thing) result.resourceArns[plan.thing!.logicalId] = thing.thingArn;
    // OBSERVED (aws-iot.md §2.8): policies named by PolicyName are left out of resourceArns.
    for (const p of policies)
      if (p.plan.policyDocument !== undefined) result.resourceArns[p.plan.logicalId] = p.rec.policyArn;
    return result;
  });
}

export interface ProvisionRequest {
  /** A template body (parsed with `flavor`) or an already parsed template. */
  template: string | ParsedTemplate;
  flavor: 'fleet' | 'jitp';
  /** Caller's parameters; `AWS::IoT::Certificate::Id` is set from `certificateId` and wins. */
  parameters: Record<string, string>;
  /** The registered certificate being provisioned (it must be the template's CertificateId). */
  certificateId: string;
}

export interface Provisioned {
  plan: TemplatePlan;
  result: RegisterResult;
  /** The certificate after provisioning. */
  certificate: CertRec;
}

/**
 * Provisions one existing certificate with a fleet or JITP template, as AWS's service-side
 * RegisterThing does: evaluate with `AWS::IoT::Certificate::Id`, require the template's
 * certificate resource to be that certificate, apply everything in one transaction, and move
 * a certificate still PENDING_ACTIVATION to the template's Status (ACTIVE when it gives none).
 * Throws IotError (InvalidRequestException for template problems,
 * ResourceRegistrationFailureException for workflow failures); nothing is changed then.
 */
export function provisionWithTemplate(ctx: Ctx, req: ProvisionRequest): Provisioned {
  let parsed: ParsedTemplate;
  if (typeof req.template === 'string') {
    try {
      parsed = parseTemplate(req.template, req.flavor);
    } catch (e) {
      if (e instanceof TemplateError) throw invalid(e.message);
      throw e;
    }
  } else parsed = req.template;
  const certificateId = req.certificateId.toLowerCase();
  const plan = evaluateOrThrow(parsed, {
    ...req.parameters,
    'AWS::IoT::Certificate::Id': certificateId,
  });
  const source = plan.certificate?.source;
  if (source?.kind !== 'id')
    throw invalid(
      'Invalid registration template. The template needs an AWS::IoT::Certificate resource with CertificateId: {"Ref": "AWS::IoT::Certificate::Id"}.',
    );
  if (source.certificateId.toLowerCase() !== certificateId)
    throw invalid(
      `Invalid registration template. The certificate resource names ${source.certificateId}, not the certificate being provisioned (${certificateId}).`,
    );
  return ctx.store.transaction(() => {
    const result = applyPlan(ctx, plan);
    let certificate = ctx.store.get<CertRec>(C.certs, certificateId)!;
    if (certificate.status === 'PENDING_ACTIVATION') {
      setCertStatus(ctx, certificate, plan.certificate!.status ?? 'ACTIVE');
      certificate = ctx.store.get<CertRec>(C.certs, certificateId)!;
    }
    return { plan, result, certificate };
  });
}

/** Parameter map checks of RegisterThing (key ≤ 2048, value ≤ 4096). */
export function checkParameters(parameters: Record<string, string>): void {
  const v = new Validation();
  for (const [k, value] of Object.entries(parameters))
    v.check('parameters', k, RULES.parameterKey).check(`parameters.${k}`, value, RULES.parameterValue);
  v.done();
}

export function registerOps(ctx: Ctx): Record<string, Handler> {
  return {
    RegisterThing: (r) => {
      const body = requiredStr(r.body, 'templateBody');
      new Validation().check('templateBody', body, RULES.templateBody).done();
      const parameters = stringMap(r.body.parameters, 'parameters');
      checkParameters(parameters);
      return applyPlan(ctx, evaluateOrThrow(parseOrThrow(body), parameters));
    },
  };
}
