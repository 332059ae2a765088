/** Provisioning templates and provisioning claims (aws-iot.md §4.3, §4.4). */
import { TemplateError, parseTemplate } from '../../src/cloud/template/index.js';
import { IotError, invalid, notFound } from '../errors.js';
import { rsaKeyPair } from '../pki.js';
import { RULES, Validation } from '../validate.js';
import { bool, obj, requiredStr, str, tokenPage } from './members.js';
import {
  C,
  arn,
  newId,
  type CaRec,
  type CertRec,
  type Ctx,
  type Handler,
  type TemplateRec,
} from './model.js';

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
      try {
        parseTemplate(body, type === 'JITP' ? 'jitp' : 'fleet');
      } catch (e) {
        if (e instanceof TemplateError) throw invalid(e.message);
        throw e;
      }
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
      };
      if (description !== undefined) rec.description = description;
      if (h) rec.preProvisioningHook = h;
      store.put(C.templates, name, rec);
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
      if (version !== undefined && version !== null && version !== t.defaultVersionId)
        throw invalid(`Version ${JSON.stringify(version)} of template ${t.templateName} does not exist.`);
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
      store.del(C.templates, t.templateName);
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
      const now = ctx.now();
      const rec: CertRec = {
        certificateId: issued.certificateId,
        certificateArn: arn.cert(ctx, issued.certificateId),
        certificatePem: issued.pem,
        status: 'ACTIVE',
        certificateMode: 'DEFAULT',
        creationDate: now,
        lastModifiedDate: now,
        generationId: newId(),
        customerVersion: 1,
        notBefore: issued.notBefore,
        notAfter: issued.notAfter,
        claim: true,
      };
      store.put(C.certs, rec.certificateId, rec);
      return {
        certificateId: rec.certificateId,
        certificatePem: rec.certificatePem,
        keyPair: { PublicKey: keys.publicPem, PrivateKey: keys.privatePem },
        expiration: issued.notAfter,
      };
    },
  };
}
