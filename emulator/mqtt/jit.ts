/**
 * Just-in-time registration and provisioning on CONNECT (aws-iot.md §3.5–3.6).
 *
 * JITR: an unknown certificate signed by an ACTIVE CA with auto-registration ENABLE is
 * registered PENDING_ACTIVATION (with caCertificateId) when its CONNECT arrives, and
 * `$aws/events/certificates/registered/<caCertificateId>` is published; a certificate still
 * PENDING_ACTIVATION publishes the event again at each connect. The caller then closes the
 * connection without CONNACK.
 *
 * JITP: when the CA also has a registration config (inline templateBody, or templateName of
 * a JITP template), the template runs through the shared evaluator (`evaluateOrThrow`) and
 * applier (`applyPlan`) with the parameters AWS takes from the certificate subject plus
 * `AWS::IoT::Certificate::Id`; on success the certificate is ACTIVE. A declared parameter
 * the subject lacks, or any evaluation/apply failure, leaves it PENDING_ACTIVATION. Every
 * step goes to the reasons log.
 */
import type { X509Certificate } from 'node:crypto';
import { TemplateError, parseTemplate, type ParsedTemplate } from '../../src/cloud/template/index.js';
import { registerCertificate, setCertStatus } from '../iot/certs.js';
import { C, type CaRec, type CertRec, type Ctx, type TemplateRec } from '../iot/model.js';
import { applyPlan, evaluateOrThrow } from '../iot/register.js';
import type { RecordEvent } from './contract.js';
import { subjectOf } from './auth.js';
import { certificateRegisteredEvent } from './events.js';

/** JITP pseudo-parameter → the subject attribute it is read from. */
export const SUBJECT_PARAMETERS: Readonly<Record<string, string>> = {
  'AWS::IoT::Certificate::Country': 'C',
  'AWS::IoT::Certificate::Organization': 'O',
  'AWS::IoT::Certificate::OrganizationalUnit': 'OU',
  'AWS::IoT::Certificate::DistinguishedNameQualifier': 'dnQualifier',
  'AWS::IoT::Certificate::StateName': 'ST',
  'AWS::IoT::Certificate::CommonName': 'CN',
  'AWS::IoT::Certificate::SerialNumber': 'serialNumber',
};

export interface JitDeps {
  ctx: Ctx;
  record: RecordEvent;
  /** Publishes a broker-originated message (subject to each subscriber's iot:Receive). */
  publish(topic: string, payload: Buffer): void;
}

export interface JitRequest {
  ca: CaRec;
  certificateId: string;
  leaf: X509Certificate;
  existing?: CertRec;
  clientId: string;
}

/** The parameters AWS passes to a JITP template for this certificate. */
export function jitpParameters(leaf: X509Certificate, certificateId: string): Record<string, string> {
  const subject = subjectOf(leaf);
  const out: Record<string, string> = { 'AWS::IoT::Certificate::Id': certificateId };
  for (const [param, attr] of Object.entries(SUBJECT_PARAMETERS)) {
    const v = subject[attr];
    if (v !== undefined) out[param] = v;
  }
  return out;
}

function templateOf(ctx: Ctx, ca: CaRec): { body: string; source: string } | string {
  const rc = ca.registrationConfig;
  if (!rc) return 'no registration config';
  if (rc.templateName) {
    const t = ctx.store.get<TemplateRec>(C.templates, rc.templateName);
    if (!t) return `the CA's JITP template ${rc.templateName} no longer exists`;
    return { body: t.templateBody, source: `template ${rc.templateName}` };
  }
  if (rc.templateBody) return { body: rc.templateBody, source: "the CA's inline templateBody" };
  return 'the registration config has neither templateBody nor templateName';
}

/** Runs JITR (and JITP when configured) for one CONNECT. Never throws. */
export function justInTime(deps: JitDeps, req: JitRequest): void {
  const { ctx, record } = deps;
  const { ca, certificateId, clientId } = req;
  const base = { clientId, certificateId };
  let cert = req.existing;
  if (!cert) {
    try {
      cert = registerCertificate(ctx, req.leaf.toString(), ca.certificatePem, 'PENDING_ACTIVATION', true);
    } catch (e) {
      record({
        kind: 'jitr.failed',
        ...base,
        reason: `just-in-time registration under CA ${ca.certificateId} failed: ${(e as Error).message}`,
      });
      return;
    }
    record({
      kind: 'jitr.registered',
      ...base,
      reason: `certificate registered PENDING_ACTIVATION under CA ${ca.certificateId} (auto-registration ENABLE); the connection is closed without CONNACK, as on AWS`,
      details: { caCertificateId: ca.certificateId },
    });
  } else {
    record({
      kind: 'jitr.pending',
      ...base,
      reason: `certificate is still PENDING_ACTIVATION under CA ${ca.certificateId}; the registered event is published again and the connection closed`,
      details: { caCertificateId: ca.certificateId },
    });
  }
  const event = certificateRegisteredEvent({
    certificateId,
    caCertificateId: ca.certificateId,
    timestampMs: Math.round(ctx.now() * 1000),
    awsAccountId: ctx.account,
  });
  deps.publish(event.topic, event.payload);
  if (ca.registrationConfig) provision(deps, req, cert);
}

function provision(deps: JitDeps, req: JitRequest, cert: CertRec): void {
  const { ctx, record } = deps;
  const base = { clientId: req.clientId, certificateId: req.certificateId };
  const fail = (reason: string, details?: Record<string, unknown>): void =>
    record({
      kind: 'jitp.failed',
      ...base,
      reason: `${reason}; the certificate stays PENDING_ACTIVATION`,
      details,
    });
  const tpl = templateOf(ctx, req.ca);
  if (typeof tpl === 'string') return fail(`JITP did not run: ${tpl}`);
  let parsed: ParsedTemplate;
  try {
    parsed = parseTemplate(tpl.body, 'jitp');
  } catch (e) {
    return fail(`JITP ${tpl.source} is not a valid JITP template: ${(e as Error).message}`);
  }
  const parameters = jitpParameters(req.leaf, req.certificateId);
  const missing = Object.entries(parsed.parameters)
    .filter(
      ([name, p]) =>
        SUBJECT_PARAMETERS[name] !== undefined && parameters[name] === undefined && p.default === undefined,
    )
    .map(([name]) => name);
  if (missing.length)
    return fail(
      `JITP ${tpl.source} declares ${missing.map((m) => `${m} (subject attribute ${SUBJECT_PARAMETERS[m]})`).join(', ')}, which the certificate subject does not have`,
      { missing, subject: subjectOf(req.leaf) },
    );
  try {
    const plan = evaluateOrThrow(parsed, parameters);
    const result = ctx.store.transaction(() => {
      const applied = applyPlan(ctx, plan);
      // AWS's JITP sequence ends with the certificate ACTIVE even when the template's
      // OverrideSettings leave the status alone (DO_NOTHING).
      const after = ctx.store.get<CertRec>(C.certs, cert.certificateId);
      if (after?.status === 'PENDING_ACTIVATION') setCertStatus(ctx, after, 'ACTIVE');
      return applied;
    });
    const final = ctx.store.get<CertRec>(C.certs, cert.certificateId);
    record({
      kind: 'jitp.provisioned',
      ...base,
      reason: `JITP ${tpl.source} provisioned ${plan.thing ? `thing ${plan.thing.thingName}` : 'no thing'}${
        plan.policies.length ? `, policies ${plan.policies.map((p) => p.policyName).join(', ')}` : ''
      }; certificate ${final?.status ?? 'gone'}; the first connection is closed, as on AWS`,
      details: { resourceArns: result.resourceArns, parameters },
    });
  } catch (e) {
    const message = e instanceof TemplateError ? e.message : (e as Error).message;
    const ref = /Ref=(AWS::IoT::Certificate::\w+)/.exec(message)?.[1];
    const hint =
      ref && SUBJECT_PARAMETERS[ref]
        ? ` (${ref} comes from the subject attribute ${SUBJECT_PARAMETERS[ref]}, which the certificate does not have)`
        : '';
    fail(`JITP ${tpl.source} failed: ${message}${hint}`, { parameters });
  }
}
