/**
 * Provisioning templates, their versions, and provisioning claims (aws-iot.md §4.3, §4.4).
 *
 * Versions: every template has 1..MAX_TEMPLATE_VERSIONS versions (C.templateVersions, key
 * `<name>\n<versionId>`); ids are integers from 1 that are never reused. The template record
 * keeps a copy of its default version's body in `templateBody`, which is what RegisterThing
 * over MQTT, JITP and DescribeProvisioningTemplate read.
 */
import { TemplateError, parseTemplate } from '../../src/cloud/template/index.js';
import { IotError, invalid, notFound } from '../errors.js';
import { rsaKeyPair } from '../pki.js';
import { RULES, Validation } from '../validate.js';
import { storeIssued } from './certs.js';
import { bool, obj, qbool, requiredStr, str, tokenPage } from './members.js';
import {
  C,
  arn,
  type CaRec,
  type Ctx,
  type Handler,
  type TemplateRec,
  type TemplateVersionRec,
} from './model.js';

/**
 * Versions per template. AWS's published quota is 5 per template (the service model only
 * names VersionsLimitExceededException; aws-iot.md §4.4 leaves the number open).
 */
export const MAX_TEMPLATE_VERSIONS = 5;

const versionKey = (name: string, id: number): string => `${name}\n${id}`;

/** The template's versions, oldest first (state written before versions existed gets version 1). */
function versionsOf(ctx: Ctx, t: TemplateRec): TemplateVersionRec[] {
  const out: TemplateVersionRec[] = [];
  for (let id = 1; id <= (t.lastVersionId ?? 1); id++) {
    const v = ctx.store.get<TemplateVersionRec>(C.templateVersions, versionKey(t.templateName, id));
    if (v) out.push(v);
  }
  if (!out.length && t.lastVersionId === undefined)
    out.push({
      templateName: t.templateName,
      versionId: 1,
      templateBody: t.templateBody,
      creationDate: t.creationDate,
    });
  return out;
}

function versionIdOf(raw: string): number {
  if (!/^\d{1,9}$/.test(raw) || Number(raw) < 1)
    throw invalid(
      `1 validation error detected: Value '${raw}' at 'versionId' failed to satisfy constraint: Member must be a positive integer`,
    );
  return Number(raw);
}

function getVersion(ctx: Ctx, t: TemplateRec, id: number): TemplateVersionRec {
  const v = versionsOf(ctx, t).find((x) => x.versionId === id);
  if (!v) throw notFound(`Version ${id} of the provisioning template ${t.templateName} does not exist`);
  return v;
}

/** Checks a body with the template type's rules (fleet or JITP), as InvalidRequestException. */
function checkBody(body: string, type: TemplateRec['type']): void {
  new Validation().check('templateBody', body, RULES.templateBody).done();
  try {
    parseTemplate(body, type === 'JITP' ? 'jitp' : 'fleet');
  } catch (e) {
    if (e instanceof TemplateError) throw invalid(e.message);
    throw e;
  }
}

function getTemplate(ctx: Ctx, name: string): TemplateRec {
  const t = ctx.store.get<TemplateRec>(C.templates, name);
  if (!t) throw notFound(`The provisioning template ${name} does not exist`);
  return t;
}

function hook(body: Record<string, unknown>): TemplateRec['preProvisioningHook'] | undefined {
  const h = obj(body, 'preProvisioningHook');
  if (!h) return undefined;
  const targetArn = requiredStr(h, 'targetArn');
  const payloadVersion = str(h, 'payloadVersion');
  new Validation()
    .check('preProvisioningHook.targetArn', targetArn, { max: 2048 })
    .check('preProvisioningHook.payloadVersion', payloadVersion, {
      min: 10,
      max: 32,
      pattern: /^[0-9-]+$/,
      patternText: '^[0-9-]+$',
    })
    .done();
  return payloadVersion === undefined ? { targetArn } : { targetArn, payloadVersion };
}

export function templateOps(ctx: Ctx): Record<string, Handler> {
  const { store } = ctx;
  return {
    CreateProvisioningTemplate: (r) => {
      const name = requiredStr(r.body, 'templateName');
      const body = requiredStr(r.body, 'templateBody');
      const role = requiredStr(r.body, 'provisioningRoleArn');
      const description = str(r.body, 'description');
      const type = str(r.body, 'type') ?? 'FLEET_PROVISIONING';
      new Validation()
        .check('templateName', name, RULES.templateName)
        .check('templateBody', body, RULES.templateBody)
        .check('provisioningRoleArn', role, RULES.roleArn)
        .check('description', description, RULES.templateDescription)
        .check('type', type, { values: ['FLEET_PROVISIONING', 'JITP'] })
        .done();
      const h = hook(r.body);
      if (h && type === 'JITP') throw invalid('A pre-provisioning hook cannot be used with a JITP template.');
      checkBody(body, type as TemplateRec['type']);
      const existing = store.get<TemplateRec>(C.templates, name);
      if (existing)
        throw new IotError(
          'ResourceAlreadyExistsException',
          `A provisioning template with the name ${name} already exists.`,
          { resourceId: name, resourceArn: existing.templateArn },
        );
      const now = ctx.now();
      const rec: TemplateRec = {
        templateName: name,
        templateArn: arn.template(ctx, name),
        templateBody: body,
        enabled: bool(r.body, 'enabled') ?? false,
        provisioningRoleArn: role,
        type: type as TemplateRec['type'],
        creationDate: now,
        lastModifiedDate: now,
        defaultVersionId: 1,
        lastVersionId: 1,
      };
      if (description !== undefined) rec.description = description;
      if (h) rec.preProvisioningHook = h;
      store.transaction(() => {
        store.put(C.templates, name, rec);
        store.put(C.templateVersions, versionKey(name, 1), {
          templateName: name,
          versionId: 1,
          templateBody: body,
          creationDate: now,
        } satisfies TemplateVersionRec);
      });
      return { templateArn: rec.templateArn, templateName: name, defaultVersionId: 1 };
    },

    DescribeProvisioningTemplate: (r) => {
      const t = getTemplate(ctx, r.path.templateName!);
      return {
        templateArn: t.templateArn,
        templateName: t.templateName,
        description: t.description,
        creationDate: t.creationDate,
        lastModifiedDate: t.lastModifiedDate,
        defaultVersionId: t.defaultVersionId,
        templateBody: t.templateBody,
        enabled: t.enabled,
        provisioningRoleArn: t.provisioningRoleArn,
        preProvisioningHook: t.preProvisioningHook,
        type: t.type,
      };
    },

    ListProvisioningTemplates: (r) => {
      const all = store
        .values<TemplateRec>(C.templates)
        .sort((a, b) => (a.templateName < b.templateName ? -1 : 1));
      const page = tokenPage(r.query, all, 25);
      return {
        templates: page.items.map((t) => ({
          templateArn: t.templateArn,
          templateName: t.templateName,
          description: t.description,
          creationDate: t.creationDate,
          lastModifiedDate: t.lastModifiedDate,
          enabled: t.enabled,
          type: t.type,
        })),
        nextToken: page.next,
      };
    },

    UpdateProvisioningTemplate: (r) => {
      const t = getTemplate(ctx, r.path.templateName!);
      const next: TemplateRec = { ...t, lastModifiedDate: ctx.now() };
      const description = str(r.body, 'description');
      const role = str(r.body, 'provisioningRoleArn');
      new Validation()
        .check('description', description, RULES.templateDescription)
        .check('provisioningRoleArn', role, RULES.roleArn)
        .done();
      if (description !== undefined) next.description = description;
      if (role !== undefined) next.provisioningRoleArn = role;
      const enabled = bool(r.body, 'enabled');
      if (enabled !== undefined) next.enabled = enabled;
      const version = r.body.defaultVersionId;
      if (version !== undefined && version !== null) {
        if (typeof version !== 'number' || !Number.isInteger(version))
          throw invalid(`Value at 'defaultVersionId' must be an integer, got ${JSON.stringify(version)}`);
        const v = getVersion(ctx, t, version);
        next.defaultVersionId = v.versionId;
        next.templateBody = v.templateBody;
      }
      const h = hook(r.body);
      if (h && t.type === 'JITP')
        throw invalid('A pre-provisioning hook cannot be used with a JITP template.');
      if (h) next.preProvisioningHook = h;
      if (bool(r.body, 'removePreProvisioningHook')) delete next.preProvisioningHook;
      store.put(C.templates, t.templateName, next);
      return undefined;
    },

    DeleteProvisioningTemplate: (r) => {
      const t = getTemplate(ctx, r.path.templateName!);
      if (store.values<CaRec>(C.cas).some((c) => c.registrationConfig?.templateName === t.templateName)) {
        throw new IotError(
          'DeleteConflictException',
          `The provisioning template ${t.templateName} is used by a CA certificate.`,
        );
      }
      store.transaction(() => {
        for (const v of versionsOf(ctx, t))
          store.del(C.templateVersions, versionKey(t.templateName, v.versionId));
        store.del(C.templates, t.templateName);
      });
      return undefined;
    },

    CreateProvisioningTemplateVersion: (r) => {
      const t = getTemplate(ctx, r.path.templateName!);
      const body = requiredStr(r.body, 'templateBody');
      checkBody(body, t.type);
      const setAsDefault = qbool(r.query, 'setAsDefault') ?? false;
      const versions = versionsOf(ctx, t);
      if (versions.length >= MAX_TEMPLATE_VERSIONS)
        throw new IotError(
          'VersionsLimitExceededException',
          `The provisioning template ${t.templateName} already has ${versions.length} versions, the maximum; delete one with DeleteProvisioningTemplateVersion first.`,
        );
      const now = ctx.now();
      const versionId = (t.lastVersionId ?? 1) + 1;
      const next: TemplateRec = { ...t, lastVersionId: versionId, lastModifiedDate: now };
      if (setAsDefault) {
        next.defaultVersionId = versionId;
        next.templateBody = body;
      }
      store.transaction(() => {
        // A template from before versions existed gets its version 1 written now.
        for (const v of versions) store.put(C.templateVersions, versionKey(t.templateName, v.versionId), v);
        store.put(C.templateVersions, versionKey(t.templateName, versionId), {
          templateName: t.templateName,
          versionId,
          templateBody: body,
          creationDate: now,
        } satisfies TemplateVersionRec);
        store.put(C.templates, t.templateName, next);
      });
      return {
        templateArn: t.templateArn,
        templateName: t.templateName,
        versionId,
        isDefaultVersion: setAsDefault,
      };
    },

    DescribeProvisioningTemplateVersion: (r) => {
      const t = getTemplate(ctx, r.path.templateName!);
      const v = getVersion(ctx, t, versionIdOf(r.path.versionId!));
      return {
        versionId: v.versionId,
        creationDate: v.creationDate,
        templateBody: v.templateBody,
        isDefaultVersion: v.versionId === t.defaultVersionId,
      };
    },

    ListProvisioningTemplateVersions: (r) => {
      const t = getTemplate(ctx, r.path.templateName!);
      const page = tokenPage(r.query, versionsOf(ctx, t), 25);
      return {
        versions: page.items.map((v) => ({
          versionId: v.versionId,
          creationDate: v.creationDate,
          isDefaultVersion: v.versionId === t.defaultVersionId,
        })),
        nextToken: page.next,
      };
    },

    DeleteProvisioningTemplateVersion: (r) => {
      const t = getTemplate(ctx, r.path.templateName!);
      const v = getVersion(ctx, t, versionIdOf(r.path.versionId!));
      if (v.versionId === t.defaultVersionId)
        throw new IotError(
          'DeleteConflictException',
          `Version ${v.versionId} is the default version of the provisioning template ${t.templateName}; make another version the default (UpdateProvisioningTemplate --default-version-id) before deleting it.`,
        );
      store.del(C.templateVersions, versionKey(t.templateName, v.versionId));
      return undefined;
    },

    CreateProvisioningClaim: (r) => {
      const t = getTemplate(ctx, r.path.templateName!);
      if (t.type !== 'FLEET_PROVISIONING')
        throw invalid(
          `Provisioning claims need a FLEET_PROVISIONING template; ${t.templateName} is ${t.type}.`,
        );
      const keys = rsaKeyPair();
      const issued = ctx.ca.issueClaim(keys.spki, new Date(ctx.now() * 1000));
      // ACTIVE until notAfter (the broker refuses it after that), hidden from ListCertificates.
      const rec = storeIssued(ctx, issued, 'ACTIVE', { claim: true });
      return {
        certificateId: rec.certificateId,
        certificatePem: rec.certificatePem,
        keyPair: { PublicKey: keys.publicPem, PrivateKey: keys.privatePem },
        expiration: issued.notAfter,
      };
    },
  };
}
