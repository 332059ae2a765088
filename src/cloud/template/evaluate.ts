/**
 * The provisioning-template evaluator shared by RegisterThing, bulk registration, JITP, fleet
 * provisioning and provline's local template lint. Pure: no I/O, no clock, no randomness.
 *
 * Supported (aws-iot.md §2): Parameters (Type String, Default), Resources of the three IoT
 * types with their properties and OverrideSettings, Mappings, DeviceConfiguration, and the
 * intrinsic functions Ref, Fn::Join, Fn::Select, Fn::Split, Fn::FindInMap, Fn::Sub.
 * Anything else (Conditions, Fn::If, Fn::GetAtt, Fn::Base64, …) is rejected with
 * InvalidRequestException, as are references that resolve to nothing.
 */
import { createHash } from 'node:crypto';
import {
  TemplateError,
  type CertificatePlan,
  type OverrideAction,
  type ParsedTemplate,
  type PolicyPlan,
  type ResourceType,
  type TemplateFlavor,
  type TemplatePlan,
  type ThingPlan,
} from './types.js';

export const TEMPLATE_BODY_MAX = 10240;
const PREFIX = 'Invalid registration template.';
const SECTIONS = new Set(['Parameters', 'Resources', 'Mappings', 'DeviceConfiguration']);
const FUNCTIONS = new Set(['Ref', 'Fn::Join', 'Fn::Select', 'Fn::Split', 'Fn::FindInMap', 'Fn::Sub']);
const RESOURCE_TYPES = new Set<ResourceType>([
  'AWS::IoT::Thing',
  'AWS::IoT::Certificate',
  'AWS::IoT::Policy',
]);
const ACTIONS = new Set<OverrideAction>(['DO_NOTHING', 'REPLACE', 'FAIL', 'MERGE']);
/** OverrideSettings keys: the property names, plus the upper-snake names the DG text uses. */
const THING_OVERRIDE_KEYS: Record<string, keyof ThingPlan['overrides']> = {
  AttributePayload: 'AttributePayload',
  ATTRIBUTE_PAYLOAD: 'AttributePayload',
  ThingTypeName: 'ThingTypeName',
  THING_TYPE_NAME: 'ThingTypeName',
  ThingGroups: 'ThingGroups',
  THING_GROUPS: 'ThingGroups',
  BillingGroup: 'BillingGroup',
  BILLING_GROUP: 'BillingGroup',
};

type Value = string | number | boolean | null | Value[] | { [k: string]: Value };

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** The name of the intrinsic function `v` is a call of, if it is one. */
function functionName(v: unknown): string | undefined {
  if (!isObject(v)) return undefined;
  const keys = Object.keys(v);
  if (keys.length !== 1) return undefined;
  const k = keys[0]!;
  return k === 'Ref' || k.startsWith('Fn::') ? k : undefined;
}

/** Checks structure and collects every problem; `parseTemplate` throws the first. */
export function analyseTemplate(
  body: string | object,
  flavor: TemplateFlavor = 'bulk',
): { template?: ParsedTemplate; problems: TemplateError[] } {
  const problems: TemplateError[] = [];
  const fail = (message: string, path: string): void =>
    void problems.push(new TemplateError(`${PREFIX} ${message}`, path));
  let doc: unknown = body;
  if (typeof body === 'string') {
    if (body.length > TEMPLATE_BODY_MAX)
      fail(`The template body is ${body.length} characters; the maximum is ${TEMPLATE_BODY_MAX}.`, '');
    try {
      doc = JSON.parse(body);
    } catch (e) {
      fail(`The template body is not valid JSON: ${(e as Error).message}`, '');
      return { problems };
    }
  }
  if (!isObject(doc)) {
    fail('The template must be a JSON object.', '');
    return { problems };
  }
  for (const key of Object.keys(doc)) {
    if (key === 'Conditions')
      fail('Conditions are not supported in AWS IoT provisioning templates.', '/Conditions');
    else if (!SECTIONS.has(key)) fail(`Unsupported template section: ${key}.`, `/${key}`);
  }
  walkFunctions(doc, '', fail);

  const parameters: ParsedTemplate['parameters'] = {};
  if (doc.Parameters !== undefined) {
    if (!isObject(doc.Parameters)) fail('Parameters must be an object.', '/Parameters');
    else
      for (const [name, decl] of Object.entries(doc.Parameters)) {
        const path = `/Parameters/${name}`;
        if (!isObject(decl)) {
          fail(`Parameter ${name} must be an object with a Type.`, path);
          continue;
        }
        if (decl.Type !== 'String')
          fail(
            `Parameter ${name} has unsupported type ${JSON.stringify(decl.Type)}; only String is supported.`,
            `${path}/Type`,
          );
        if (decl.Default !== undefined && typeof decl.Default !== 'string')
          fail(`The Default of parameter ${name} must be a string.`, `${path}/Default`);
        parameters[name] = {
          type: 'String',
          ...(typeof decl.Default === 'string' ? { default: decl.Default } : {}),
        };
      }
  }

  const mappings: ParsedTemplate['mappings'] = {};
  if (doc.Mappings !== undefined) {
    if (!isObject(doc.Mappings)) fail('Mappings must be an object.', '/Mappings');
    else
      for (const [name, top] of Object.entries(doc.Mappings)) {
        if (!isObject(top) || !Object.values(top).every(isObject)) {
          fail(
            `Mapping ${name} must map top-level keys to objects of second-level keys.`,
            `/Mappings/${name}`,
          );
          continue;
        }
        if (containsFunction(top))
          fail(`Mapping ${name} may not contain parameters or intrinsic functions.`, `/Mappings/${name}`);
        mappings[name] = top as Record<string, Record<string, unknown>>;
      }
  }

  const resources: ParsedTemplate['resources'] = [];
  if (!isObject(doc.Resources) || Object.keys(doc.Resources).length === 0) {
    fail('The Resources section is missing or empty.', '/Resources');
  } else {
    const counts = new Map<string, number>();
    for (const [logicalId, res] of Object.entries(doc.Resources)) {
      const path = `/Resources/${logicalId}`;
      if (!isObject(res) || typeof res.Type !== 'string' || !RESOURCE_TYPES.has(res.Type as ResourceType)) {
        fail(
          `Resource ${logicalId} has an unsupported Type; use AWS::IoT::Thing, AWS::IoT::Certificate or AWS::IoT::Policy.`,
          `${path}/Type`,
        );
        continue;
      }
      if (res.Properties !== undefined && !isObject(res.Properties))
        fail(`Properties of ${logicalId} must be an object.`, `${path}/Properties`);
      if (res.OverrideSettings !== undefined && !isObject(res.OverrideSettings))
        fail(`OverrideSettings of ${logicalId} must be an object.`, `${path}/OverrideSettings`);
      const type = res.Type as ResourceType;
      counts.set(type, (counts.get(type) ?? 0) + 1);
      if (type !== 'AWS::IoT::Policy' && counts.get(type)! > 1)
        fail(`Only one resource of type ${type} is allowed.`, path);
      const properties = isObject(res.Properties) ? res.Properties : {};
      const overrideSettings = isObject(res.OverrideSettings) ? res.OverrideSettings : {};
      checkStatic(logicalId, type, properties, overrideSettings, flavor, path, fail);
      resources.push({ logicalId, type, properties, overrideSettings });
    }
  }

  let deviceConfiguration: Record<string, unknown> | undefined;
  if (doc.DeviceConfiguration !== undefined) {
    if (!isObject(doc.DeviceConfiguration))
      fail('DeviceConfiguration must be an object.', '/DeviceConfiguration');
    else {
      for (const [k, v] of Object.entries(doc.DeviceConfiguration)) {
        if (isObject(v) && !functionName(v))
          fail(
            `DeviceConfiguration.${k}: nested JSON objects are not supported.`,
            `/DeviceConfiguration/${k}`,
          );
      }
      deviceConfiguration = doc.DeviceConfiguration;
    }
  }
  if (problems.length) return { problems };
  return { template: { parameters, mappings, resources, deviceConfiguration }, problems };
}

function containsFunction(v: unknown): boolean {
  if (Array.isArray(v)) return v.some(containsFunction);
  if (!isObject(v)) return false;
  if (functionName(v)) return true;
  return Object.values(v).some(containsFunction);
}

function walkFunctions(v: unknown, path: string, fail: (m: string, p: string) => void): void {
  if (Array.isArray(v)) return v.forEach((x, i) => walkFunctions(x, `${path}/${i}`, fail));
  if (!isObject(v)) return;
  const fn = functionName(v);
  if (fn && !FUNCTIONS.has(fn)) fail(`Unsupported intrinsic function: ${fn}.`, `${path}/${fn}`);
  for (const [k, x] of Object.entries(v)) walkFunctions(x, `${path}/${k}`, fail);
}

function checkStatic(
  logicalId: string,
  type: ResourceType,
  props: Record<string, unknown>,
  overrides: Record<string, unknown>,
  flavor: TemplateFlavor,
  path: string,
  fail: (m: string, p: string) => void,
): void {
  for (const [k, v] of Object.entries(overrides)) {
    if (typeof v !== 'string' || !ACTIONS.has(v as OverrideAction))
      fail(
        `OverrideSettings.${k} of ${logicalId} must be one of DO_NOTHING, REPLACE, FAIL, MERGE.`,
        `${path}/OverrideSettings/${k}`,
      );
  }
  if (type === 'AWS::IoT::Thing') {
    if (props.ThingName === undefined)
      fail(`ThingName is missing in resource ${logicalId}.`, `${path}/Properties`);
    for (const [k, v] of Object.entries(overrides)) {
      const prop = THING_OVERRIDE_KEYS[k];
      if (!prop)
        fail(`OverrideSettings.${k} is not a property of AWS::IoT::Thing.`, `${path}/OverrideSettings/${k}`);
      else if (v === 'MERGE' && prop !== 'AttributePayload' && prop !== 'ThingGroups')
        fail(
          `MERGE is only allowed for AttributePayload and ThingGroups, not ${k}.`,
          `${path}/OverrideSettings/${k}`,
        );
    }
  } else if (type === 'AWS::IoT::Certificate') {
    const given = ['CertificateSigningRequest', 'CertificateId', 'CertificatePem'].filter(
      (k) => props[k] !== undefined,
    );
    if (given.length !== 1)
      fail(
        `Resource ${logicalId} needs exactly one of CertificateSigningRequest, CertificateId, CertificatePem.`,
        `${path}/Properties`,
      );
    if ((flavor === 'fleet' || flavor === 'jitp') && given[0] !== 'CertificateId')
      fail(
        `${flavor === 'fleet' ? 'Fleet provisioning' : 'JITP'} templates must use CertificateId.`,
        `${path}/Properties`,
      );
    for (const [k, v] of Object.entries(overrides)) {
      if (k !== 'Status')
        fail(
          `OverrideSettings.${k} is not allowed on AWS::IoT::Certificate (only Status).`,
          `${path}/OverrideSettings/${k}`,
        );
      else if (v === 'MERGE') fail('MERGE is not allowed for Status.', `${path}/OverrideSettings/${k}`);
    }
  } else {
    if (props.PolicyName === undefined && props.PolicyDocument === undefined)
      fail('Neither policyName nor policyDocument is present in the Template.', `${path}/Properties`);
    if (Object.keys(overrides).length)
      fail(
        `OverrideSettings are not allowed on AWS::IoT::Policy (${logicalId}).`,
        `${path}/OverrideSettings`,
      );
  }
}

/** Parses and checks a template body; throws the first TemplateError. */
export function parseTemplate(body: string | object, flavor: TemplateFlavor = 'bulk'): ParsedTemplate {
  const { template, problems } = analyseTemplate(body, flavor);
  if (!template) throw problems[0]!;
  return template;
}

/** Every structural problem of a template (empty when it is fine), for `provline` lint. */
export function lintTemplate(body: string | object, flavor: TemplateFlavor = 'bulk'): TemplateError[] {
  return analyseTemplate(body, flavor).problems;
}

/** The 40-hex upper-case name AWS gives a policy created from a document alone (SHA-1). */
export function policyNameForDocument(document: string): string {
  return createHash('sha1').update(document).digest('hex').toUpperCase();
}

class Evaluator {
  constructor(
    private readonly t: ParsedTemplate,
    private readonly params: Readonly<Record<string, string>>,
  ) {}

  private unresolved(name: string, path: string): TemplateError {
    return new TemplateError(`${PREFIX} Cannot resolve reference value: {Ref=${name}}`, path);
  }

  ref(name: string, path: string): string {
    const decl = this.t.parameters[name];
    if (!decl) throw this.unresolved(name, path);
    const v = this.params[name] ?? decl.default;
    if (v === undefined) throw this.unresolved(name, path);
    return v;
  }

  value(v: unknown, path: string): Value {
    if (Array.isArray(v)) return v.map((x, i) => this.value(x, `${path}/${i}`));
    if (!isObject(v)) return v as Value;
    const fn = functionName(v);
    if (!fn) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, this.value(x, `${path}/${k}`)]));
    const arg = v[fn];
    const at = `${path}/${fn}`;
    switch (fn) {
      case 'Ref':
        if (typeof arg !== 'string') throw new TemplateError(`${PREFIX} Ref takes a parameter name.`, at);
        return this.ref(arg, at);
      case 'Fn::Join': {
        const [delim, list] = this.args(arg, 2, fn, at);
        return this.list(list, at).join(this.string(delim, at));
      }
      case 'Fn::Select': {
        const [index, list] = this.args(arg, 2, fn, at);
        const i = Number(this.string(index, at));
        const items = this.list(list, at);
        if (!Number.isInteger(i) || i < 0 || i >= items.length)
          throw new TemplateError(
            `${PREFIX} Fn::Select index ${i} is out of bounds for a list of ${items.length}.`,
            at,
          );
        return items[i]!;
      }
      case 'Fn::Split': {
        const [delim, s] = this.args(arg, 2, fn, at);
        const d = this.string(delim, at);
        if (!d) throw new TemplateError(`${PREFIX} Fn::Split needs a non-empty delimiter.`, at);
        return this.string(s, at).split(d);
      }
      case 'Fn::FindInMap': {
        const [m, k1, k2] = this.args(arg, 3, fn, at).map((x) => this.string(x, at)) as [
          string,
          string,
          string,
        ];
        const found = this.t.mappings[m]?.[k1]?.[k2];
        if (found === undefined)
          throw new TemplateError(
            `${PREFIX} Fn::FindInMap cannot find [${m}, ${k1}, ${k2}] in Mappings.`,
            at,
          );
        return found as Value;
      }
      case 'Fn::Sub': {
        const [text, vars] = typeof arg === 'string' ? [arg, {}] : this.args(arg, 2, fn, at);
        if (typeof text !== 'string' || !isObject(vars))
          throw new TemplateError(`${PREFIX} Fn::Sub takes a string or [string, {variables}].`, at);
        return text.replace(/\$\{(!?)([^}]*)\}/g, (_m, bang: string, name: string) => {
          if (bang) return `\${${name}}`;
          if (name in vars) return this.string(vars[name], at);
          return this.ref(name, at);
        });
      }
      default:
        throw new TemplateError(`${PREFIX} Unsupported intrinsic function: ${fn}.`, at);
    }
  }

  private args(arg: unknown, n: number, fn: string, at: string): unknown[] {
    if (!Array.isArray(arg) || arg.length !== n)
      throw new TemplateError(`${PREFIX} ${fn} takes a list of ${n} arguments.`, at);
    return arg;
  }

  string(v: unknown, path: string): string {
    const r = this.value(v, path);
    if (typeof r === 'string') return r;
    if (typeof r === 'number' || typeof r === 'boolean') return String(r);
    throw new TemplateError(`${PREFIX} Expected a string at ${path || '/'}.`, path);
  }

  list(v: unknown, path: string): string[] {
    const r = this.value(v, path);
    if (!Array.isArray(r)) throw new TemplateError(`${PREFIX} Expected a list at ${path || '/'}.`, path);
    return r.map((x, i) => {
      if (typeof x === 'string') return x;
      if (typeof x === 'number' || typeof x === 'boolean') return String(x);
      throw new TemplateError(`${PREFIX} Expected a list of strings at ${path}/${i}.`, `${path}/${i}`);
    });
  }

  optString(v: unknown, path: string): string | undefined {
    return v === undefined ? undefined : this.string(v, path);
  }
}

function action(v: unknown, fallback: OverrideAction): OverrideAction {
  return typeof v === 'string' ? (v as OverrideAction) : fallback;
}

/**
 * Evaluates a parsed template for one set of parameter values (strings; pseudo-parameters
 * such as AWS::IoT::Certificate::Id are passed the same way, and must be declared).
 * Throws TemplateError (InvalidRequestException) for anything unresolvable.
 */
export function evaluateTemplate(
  t: ParsedTemplate,
  parameters: Readonly<Record<string, string>>,
): TemplatePlan {
  const ev = new Evaluator(t, parameters);
  const plan: TemplatePlan = { policies: [] };
  for (const r of t.resources) {
    const p = (k: string): unknown => r.properties[k];
    const at = (k: string): string => `/Resources/${r.logicalId}/Properties/${k}`;
    if (r.type === 'AWS::IoT::Thing') {
      const o: ThingPlan['overrides'] = {
        AttributePayload: 'DO_NOTHING',
        ThingTypeName: 'DO_NOTHING',
        ThingGroups: 'DO_NOTHING',
        BillingGroup: 'DO_NOTHING',
      };
      for (const [k, v] of Object.entries(r.overrideSettings))
        o[THING_OVERRIDE_KEYS[k]!] = action(v, 'DO_NOTHING');
      const thing: ThingPlan = {
        logicalId: r.logicalId,
        thingName: ev.string(p('ThingName'), at('ThingName')),
        overrides: o,
      };
      const type = ev.optString(p('ThingTypeName'), at('ThingTypeName'));
      if (type !== undefined) thing.thingTypeName = type;
      if (p('AttributePayload') !== undefined) {
        const payload = ev.value(p('AttributePayload'), at('AttributePayload'));
        if (!isObject(payload))
          throw new TemplateError(
            `${PREFIX} AttributePayload must be a flat object of name/value pairs.`,
            at('AttributePayload'),
          );
        thing.attributes = {};
        for (const [k, v] of Object.entries(payload)) {
          if (isObject(v) || Array.isArray(v) || v === null)
            throw new TemplateError(
              `${PREFIX} AttributePayload.${k} must be a string (the template form is a flat map).`,
              `${at('AttributePayload')}/${k}`,
            );
          thing.attributes[k] = String(v);
        }
      }
      if (p('ThingGroups') !== undefined) thing.thingGroups = ev.list(p('ThingGroups'), at('ThingGroups'));
      const billing = ev.optString(p('BillingGroup'), at('BillingGroup'));
      if (billing !== undefined) thing.billingGroup = billing;
      plan.thing = thing;
    } else if (r.type === 'AWS::IoT::Certificate') {
      const status = ev.optString(p('Status'), at('Status'))?.toUpperCase();
      if (status !== undefined && status !== 'ACTIVE' && status !== 'INACTIVE')
        throw new TemplateError(
          `${PREFIX} Certificate Status must be ACTIVE or INACTIVE, got ${status}.`,
          at('Status'),
        );
      let source: CertificatePlan['source'];
      if (p('CertificateSigningRequest') !== undefined)
        source = {
          kind: 'csr',
          certificateSigningRequest: ev.string(
            p('CertificateSigningRequest'),
            at('CertificateSigningRequest'),
          ),
        };
      else if (p('CertificateId') !== undefined)
        source = { kind: 'id', certificateId: ev.string(p('CertificateId'), at('CertificateId')) };
      else {
        source = { kind: 'pem', certificatePem: ev.string(p('CertificatePem'), at('CertificatePem')) };
        const ca = ev.optString(p('CACertificatePem'), at('CACertificatePem'));
        if (ca !== undefined) source.caCertificatePem = ca;
      }
      const cert: CertificatePlan = {
        logicalId: r.logicalId,
        source,
        overrides: { Status: action(r.overrideSettings.Status, status ? 'REPLACE' : 'DO_NOTHING') },
      };
      if (status) cert.status = status;
      plan.certificate = cert;
    } else {
      const name = ev.optString(p('PolicyName'), at('PolicyName'));
      let document: string | undefined;
      if (p('PolicyDocument') !== undefined) {
        const d = ev.value(p('PolicyDocument'), at('PolicyDocument'));
        document = typeof d === 'string' ? d : JSON.stringify(d);
      }
      const policy: PolicyPlan = {
        logicalId: r.logicalId,
        policyName: name ?? policyNameForDocument(document!),
      };
      if (document !== undefined) policy.policyDocument = document;
      plan.policies.push(policy);
    }
  }
  if (t.deviceConfiguration) {
    plan.deviceConfiguration = {};
    for (const [k, v] of Object.entries(t.deviceConfiguration))
      plan.deviceConfiguration[k] = ev.string(v, `/DeviceConfiguration/${k}`);
  }
  return plan;
}
