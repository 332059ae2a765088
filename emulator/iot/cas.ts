/**
 * CA certificates, the registration code, and DescribeEndpoint (aws-iot.md §3.1, §5.3).
 * `iot:Data-ATS` names the stand-in's MQTT endpoint (`localhost:<port>`, the host in its
 * server certificate), so a device that asks DescribeEndpoint finds the broker.
 */
import { IotError, invalid, notFound } from '../errors.js';
import { parseCertificate } from '../pki.js';
import { certificatePage } from './certs.js';
import { RULES, Validation } from '../validate.js';
import { bool, checkCertificateId, markerPage, obj, qbool, requiredStr, str } from './members.js';
import {
  C,
  arn,
  hex,
  newId,
  type AccountMeta,
  type CaRec,
  type Ctx,
  type Handler,
  type RegistrationConfig,
  type TemplateRec,
} from './model.js';
import { parseOrThrow } from './register.js';

const MAX_CAS_PER_SUBJECT = 10;

export function accountMeta(ctx: Ctx): AccountMeta {
  let meta = ctx.store.get<AccountMeta>(C.meta, 'account');
  if (!meta?.registrationCode) {
    // First use, or the first use after DeleteRegistrationCode (which empties the code).
    meta = { endpointPrefix: hex(7), ...meta, registrationCode: hex(32) };
    ctx.store.put(C.meta, 'account', meta);
  }
  return meta;
}

function getCa(ctx: Ctx, id: string): CaRec {
  const ca = ctx.store.get<CaRec>(C.cas, checkCertificateId(id, 'caCertificateId'));
  if (!ca) throw notFound(`The CA certificate ${id} does not exist`);
  return ca;
}

function registrationConfig(ctx: Ctx, body: Record<string, unknown>): RegistrationConfig | undefined {
  const rc = obj(body, 'registrationConfig');
  if (!rc) return undefined;
  const out: RegistrationConfig = {};
  const templateBody = str(rc, 'templateBody');
  const roleArn = str(rc, 'roleArn');
  const templateName = str(rc, 'templateName');
  new Validation()
    .check('registrationConfig.templateBody', templateBody, RULES.templateBody)
    .check('registrationConfig.roleArn', roleArn, RULES.roleArn)
    .check('registrationConfig.templateName', templateName, RULES.templateName)
    .done();
  if (templateBody !== undefined) {
    parseOrThrow(templateBody);
    out.templateBody = templateBody;
  }
  if (roleArn !== undefined) out.roleArn = roleArn;
  if (templateName !== undefined) {
    const t = ctx.store.get<TemplateRec>(C.templates, templateName);
    if (!t) throw notFound(`Provisioning template ${templateName} cannot be found.`);
    if (t.type !== 'JITP') throw invalid(`Provisioning template ${templateName} is not of type JITP.`);
    out.templateName = templateName;
  }
  return out;
}

const ENDPOINT_HOSTS: Record<string, (prefix: string, region: string) => string> = {
  'iot:Data': (p, r) => `${p}.iot.${r}.amazonaws.com`,
  'iot:Data-ATS': (p, r) => `${p}-ats.iot.${r}.amazonaws.com`,
  'iot:CredentialProvider': (p, r) => `${p}.credentials.iot.${r}.amazonaws.com`,
  'iot:Jobs': (p, r) => `${p}.jobs.iot.${r}.amazonaws.com`,
};

export interface CaOpsOptions {
  /** What DescribeEndpoint returns for iot:Data-ATS (the MQTT endpoint, host:port). */
  dataAtsEndpoint?: string;
}

export function caOps(ctx: Ctx, options: CaOpsOptions = {}): Record<string, Handler> {
  const { store } = ctx;
  return {
    GetRegistrationCode: () => ({ registrationCode: accountMeta(ctx).registrationCode }),

    DeleteRegistrationCode: () => {
      const meta = ctx.store.get<AccountMeta>(C.meta, 'account');
      if (!meta?.registrationCode)
        throw notFound('There is no registration code to delete; GetRegistrationCode creates one.');
      // The next GetRegistrationCode makes a new code; the endpoint prefix stays.
      ctx.store.put(C.meta, 'account', { ...meta, registrationCode: '' });
      return undefined;
    },

    DescribeEndpoint: (r) => {
      const type = r.query.get('endpointType') ?? 'iot:Data';
      const host = ENDPOINT_HOSTS[type];
      if (!host)
        throw invalid(
          `Endpoint type ${type} is not valid; use one of ${Object.keys(ENDPOINT_HOSTS).join(', ')}.`,
        );
      if (type === 'iot:Data-ATS' && options.dataAtsEndpoint)
        return { endpointAddress: options.dataAtsEndpoint };
      return { endpointAddress: host(accountMeta(ctx).endpointPrefix, ctx.region) };
    },

    DeleteCACertificate: (r) => {
      const ca = getCa(ctx, r.path.caCertificateId!);
      if (ca.status === 'ACTIVE')
        throw new IotError(
          'CertificateStateException',
          `The CA certificate ${ca.certificateId} is ACTIVE; set it INACTIVE before deleting it.`,
        );
      store.del(C.cas, ca.certificateId);
      return undefined;
    },

    ListCertificatesByCA: (r) => {
      const ca = getCa(ctx, r.path.caCertificateId!);
      return certificatePage(ctx, r.query, (c) => c.caCertificateId === ca.certificateId);
    },

    RegisterCACertificate: (r) => {
      const caPem = requiredStr(r.body, 'caCertificate');
      const verificationPem = str(r.body, 'verificationCertificate');
      const mode = str(r.body, 'certificateMode') ?? 'DEFAULT';
      new Validation()
        .check('caCertificate', caPem, RULES.certificatePem)
        .check('certificateMode', mode, { values: ['DEFAULT', 'SNI_ONLY'] })
        .done();
      const ca = parseCertificate(caPem, 'CA certificate');
      if (!ca.x509.ca)
        throw new IotError(
          'CertificateValidationException',
          'CA certificate is not valid. The CA certificate does not have the basicConstraints extension as true',
        );
      if (ca.notAfter < ctx.now())
        throw new IotError('CertificateValidationException', 'The CA certificate has expired.');
      if (mode === 'SNI_ONLY') {
        if (verificationPem !== undefined)
          throw invalid('verificationCertificate must be empty when certificateMode is SNI_ONLY.');
      } else {
        if (verificationPem === undefined)
          throw invalid('verificationCertificate is required when certificateMode is DEFAULT.');
        const v = parseCertificate(verificationPem, 'verification certificate');
        const cn = /(?:^|\n)CN=([^\n]*)/.exec(v.x509.subject)?.[1];
        if (cn !== accountMeta(ctx).registrationCode)
          throw new IotError(
            'RegistrationCodeValidationException',
            'The verification certificate does not have the registration code as its Common Name.',
          );
        if (!v.x509.checkIssued(ca.x509) || !v.x509.verify(ca.x509.publicKey))
          throw new IotError(
            'CertificateValidationException',
            'The verification certificate is not signed by the CA certificate.',
          );
      }
      const existing = store.get<CaRec>(C.cas, ca.certificateId);
      if (existing)
        throw new IotError('ResourceAlreadyExistsException', 'The CA certificate is already registered.', {
          resourceId: existing.certificateId,
          resourceArn: existing.certificateArn,
        });
      if (
        store.values<CaRec>(C.cas).filter((c) => c.subject === ca.x509.subject).length >= MAX_CAS_PER_SUBJECT
      ) {
        throw new IotError(
          'LimitExceededException',
          `At most ${MAX_CAS_PER_SUBJECT} CA certificates with the same subject can be registered.`,
        );
      }
      const now = ctx.now();
      const rec: CaRec = {
        certificateId: ca.certificateId,
        certificateArn: arn.cacert(ctx, ca.certificateId),
        certificatePem: ca.pem,
        subject: ca.x509.subject,
        status: qbool(r.query, 'setAsActive') ? 'ACTIVE' : 'INACTIVE',
        autoRegistrationStatus: qbool(r.query, 'allowAutoRegistration') ? 'ENABLE' : 'DISABLE',
        certificateMode: mode as CaRec['certificateMode'],
        creationDate: now,
        lastModifiedDate: now,
        generationId: newId(),
        customerVersion: 1,
        notBefore: ca.notBefore,
        notAfter: ca.notAfter,
      };
      const rc = registrationConfig(ctx, r.body);
      if (rc) rec.registrationConfig = rc;
      store.put(C.cas, rec.certificateId, rec);
      return { certificateArn: rec.certificateArn, certificateId: rec.certificateId };
    },

    DescribeCACertificate: (r) => {
      const ca = getCa(ctx, r.path.caCertificateId!);
      return {
        certificateDescription: {
          certificateArn: ca.certificateArn,
          certificateId: ca.certificateId,
          status: ca.status,
          certificatePem: ca.certificatePem,
          ownedBy: ctx.account,
          creationDate: ca.creationDate,
          autoRegistrationStatus: ca.autoRegistrationStatus,
          lastModifiedDate: ca.lastModifiedDate,
          customerVersion: ca.customerVersion,
          generationId: ca.generationId,
          validity: { notBefore: ca.notBefore, notAfter: ca.notAfter },
          certificateMode: ca.certificateMode,
        },
        registrationConfig: ca.registrationConfig,
      };
    },

    UpdateCACertificate: (r) => {
      const ca = getCa(ctx, r.path.caCertificateId!);
      const status = r.query.get('newStatus');
      const auto = r.query.get('newAutoRegistrationStatus');
      new Validation()
        .check('newStatus', status ?? undefined, { values: ['ACTIVE', 'INACTIVE'] })
        .check('newAutoRegistrationStatus', auto ?? undefined, { values: ['ENABLE', 'DISABLE'] })
        .done();
      const next: CaRec = {
        ...ca,
        lastModifiedDate: ctx.now(),
        customerVersion: ca.customerVersion + 1,
        generationId: newId(),
      };
      if (status) next.status = status as CaRec['status'];
      if (auto) next.autoRegistrationStatus = auto as CaRec['autoRegistrationStatus'];
      const rc = registrationConfig(ctx, r.body);
      if (rc) next.registrationConfig = rc;
      if (bool(r.body, 'removeAutoRegistration')) delete next.registrationConfig;
      store.put(C.cas, ca.certificateId, next);
      return undefined;
    },

    ListCACertificates: (r) => {
      const templateName = r.query.get('templateName');
      const all = store
        .values<CaRec>(C.cas)
        .filter((c) => templateName === null || c.registrationConfig?.templateName === templateName)
        .sort((a, b) => a.creationDate - b.creationDate || (a.certificateId < b.certificateId ? -1 : 1));
      const page = markerPage(r.query, all);
      return {
        certificates: page.items.map((c) => ({
          certificateArn: c.certificateArn,
          certificateId: c.certificateId,
          status: c.status,
          creationDate: c.creationDate,
        })),
        nextMarker: page.next,
      };
    },
  };
}
