/**
 * The JITR activator's decision core (issue 13 item 5): given the event AWS IoT publishes on
 * `$aws/events/certificates/registered/<caCertificateId>`, the certificate as DescribeCertificate
 * returns it and the activator's configuration (the factory CA certificates and what the
 * profile expects of a device), decide: activate (and as which thing), nothing to do (the
 * certificate is ACTIVE already: a replayed event), or refuse, and why.
 *
 * "Certificates provline did not sign are not activated": the certificate's signature must
 * verify under one of the configured factory CA certificates (the caCertificateId in the event
 * only says which registered CA AWS matched, which anyone who registered a CA can arrange),
 * it must be valid now, and its subject must carry the thing name the profile's pattern
 * expects (CN) and the profile's fixed subject attributes.
 *
 * Pure: no I/O, no clock of its own. It is part of the Lambda package, so it imports nothing
 * but node builtins (src/cloud/jitr/package.ts checks).
 */
import { X509Certificate, createHash } from 'node:crypto';

/** The activator's configuration (the PROVLINE_JITR_CONFIG variable, minus the CA certificates). */
export interface ActivatorSettings {
  /** The profile it was made from, for the logs. */
  profile: string;
  /** Thing-name pattern: literal text with `{placeholder}`s, e.g. `sensor-{serial}`; the CN must match it. */
  thingName: string;
  /** Subject attributes every device certificate carries with exactly these values (the profile's csrSubject). */
  subject?: Record<string, string>;
  /** Thing attributes: name → pattern over the thing-name placeholders. */
  attributes?: Record<string, string>;
  thingType?: string;
  /** The device policy attached to each activated certificate (it must exist). */
  policyName: string;
}

export interface ActivatorConfig extends ActivatorSettings {
  /** The factory CA certificates (PEM) a device certificate must be signed by, one of them. */
  caCertificates: string[];
}

/** A configuration checked and compiled once (the thing-name matcher, the parsed CAs). */
export interface CompiledConfig {
  settings: ActivatorSettings;
  cas: Array<{ certificate: X509Certificate; certificateId: string; subject: string }>;
  matchThingName: (cn: string) => Record<string, string> | undefined;
}

/** The registered event (aws-iot.md §3.5). */
export interface RegisteredEvent {
  certificateId: string;
  caCertificateId: string;
  certificateStatus?: string;
  awsAccountId?: string;
  timestamp?: number;
}

/** What DescribeCertificate says of the certificate. */
export interface CertificateView {
  certificateId: string;
  certificateArn: string;
  certificatePem: string;
  status: string;
  caCertificateId?: string;
}

export type RefusalCode =
  | 'JITR_EVENT_INVALID'
  | 'JITR_CERTIFICATE_UNKNOWN'
  | 'JITR_CERTIFICATE_MISMATCH'
  | 'JITR_CERTIFICATE_STATUS'
  | 'JITR_NOT_SIGNED_BY_FACTORY_CA'
  | 'JITR_CERTIFICATE_NOT_VALID_NOW'
  | 'JITR_SUBJECT_MISMATCH';

export type Decision =
  | {
      action: 'activate';
      certificateId: string;
      certificateArn: string;
      thingName: string;
      attributes: Record<string, string>;
      thingType?: string;
      policyName: string;
      /** The factory CA whose key signed the certificate. */
      caCertificateId: string;
      reason: string;
    }
  | { action: 'none'; certificateId: string; reason: string }
  | { action: 'refuse'; certificateId?: string; code: RefusalCode; reason: string };

/** A configuration problem: the field, the value and what would be valid. */
export class ActivatorConfigError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
    this.name = 'ActivatorConfigError';
  }
}

/** Thing names, types and attribute names/values as AWS IoT accepts them. */
const THING_NAME_RE = /^[a-zA-Z0-9:_-]{1,128}$/;
const ATTRIBUTE_NAME_RE = /^[a-zA-Z0-9_.,@/:#-]{1,128}$/;
const ATTRIBUTE_VALUE_RE = /^[a-zA-Z0-9_.,@/:#=[\]-]{0,800}$/;
const POLICY_NAME_RE = /^[\w+=,.@-]{1,128}$/;
/** What one placeholder of the thing-name pattern may match: thing-name characters. */
const PLACEHOLDER_VALUE = '([a-zA-Z0-9:_-]+?)';
const SUBJECT_ATTRIBUTES = ['C', 'ST', 'L', 'O', 'OU', 'CN', 'serialNumber', 'dnQualifier'];

type Part = { lit: string } | { name: string };

/** `sensor-{serial}` → parts; `{{`/`}}` are literal braces (the profile pattern syntax). */
export function patternParts(source: string, field: string): Part[] {
  const parts: Part[] = [];
  let lit = '';
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!;
    const next = source[i + 1];
    if ((c === '{' || c === '}') && next === c) {
      lit += c;
      i++;
      continue;
    }
    if (c === '}')
      throw new ActivatorConfigError(field, `unmatched "}" in "${source}" (write }} for a brace)`);
    if (c !== '{') {
      lit += c;
      continue;
    }
    const end = source.indexOf('}', i);
    const name = end < 0 ? '' : source.slice(i + 1, end);
    if (!/^[A-Za-z_][A-Za-z0-9_.-]*$/.test(name))
      throw new ActivatorConfigError(
        field,
        `bad placeholder in "${source}" (placeholders look like {serial})`,
      );
    if (lit) parts.push({ lit });
    lit = '';
    parts.push({ name });
    i = end;
  }
  if (lit) parts.push({ lit });
  return parts;
}

const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');

function thingNameMatcher(pattern: string): {
  names: string[];
  match: (cn: string) => Record<string, string> | undefined;
} {
  const parts = patternParts(pattern, 'thingName');
  const names: string[] = [];
  let re = '^';
  for (const p of parts) {
    if ('lit' in p) re += escapeRe(p.lit);
    else if (names.includes(p.name)) re += `\\${names.indexOf(p.name) + 1}`;
    else {
      names.push(p.name);
      re += PLACEHOLDER_VALUE;
    }
  }
  const compiled = new RegExp(`${re}$`);
  return {
    names,
    match: (cn) => {
      const m = compiled.exec(cn);
      if (!m) return undefined;
      return Object.fromEntries(names.map((n, i) => [n, m[i + 1]!]));
    },
  };
}

function fill(parts: Part[], values: Record<string, string>): string {
  return parts.map((p) => ('lit' in p ? p.lit : values[p.name]!)).join('');
}

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

function stringRecord(v: unknown, field: string): Record<string, string> | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isRecord(v))
    throw new ActivatorConfigError(field, `must be an object of strings, got ${JSON.stringify(v)}`);
  for (const [k, x] of Object.entries(v))
    if (typeof x !== 'string')
      throw new ActivatorConfigError(`${field}.${k}`, `must be a string, got ${JSON.stringify(x)}`);
  return v as Record<string, string>;
}

/** PEM certificate blocks in a text, in order. */
export function pemCertificates(text: string): string[] {
  return [...text.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)].map((m) => m[0]);
}

/** AWS's certificate id: the SHA-256 of the DER, lower-case hex. */
export function certificateIdOf(pem: string): string {
  return createHash('sha256').update(new X509Certificate(pem).raw).digest('hex');
}

/** Checks a configuration (every field, with what would be valid) and compiles it. */
export function compileConfig(raw: unknown): CompiledConfig {
  if (!isRecord(raw)) throw new ActivatorConfigError('config', 'must be a JSON object');
  const str = (field: string, required: boolean): string | undefined => {
    const v = raw[field];
    if (v === undefined || v === null) {
      if (required) throw new ActivatorConfigError(field, 'is required');
      return undefined;
    }
    if (typeof v !== 'string' || !v)
      throw new ActivatorConfigError(field, `must be a non-empty string, got ${JSON.stringify(v)}`);
    return v;
  };
  const profile = str('profile', false) ?? 'unnamed';
  const thingName = str('thingName', true)!;
  const policyName = str('policyName', true)!;
  if (!POLICY_NAME_RE.test(policyName))
    throw new ActivatorConfigError(
      'policyName',
      `"${policyName}" is not an AWS IoT policy name ([\\w+=,.@-]{1,128})`,
    );
  const thingType = str('thingType', false);
  if (thingType !== undefined && !THING_NAME_RE.test(thingType))
    throw new ActivatorConfigError(
      'thingType',
      `"${thingType}" is not an AWS IoT thing type name ([a-zA-Z0-9:_-]{1,128})`,
    );
  const subject = stringRecord(raw.subject, 'subject');
  for (const k of Object.keys(subject ?? {}))
    if (!SUBJECT_ATTRIBUTES.includes(k) || k === 'CN')
      throw new ActivatorConfigError(
        `subject.${k}`,
        `is not a fixed subject attribute the activator checks (one of ${SUBJECT_ATTRIBUTES.filter((a) => a !== 'CN').join(', ')}; CN is the thing name)`,
      );
  const matcher = thingNameMatcher(thingName);
  if (!matcher.names.length)
    throw new ActivatorConfigError(
      'thingName',
      `"${thingName}" has no placeholder, so every device would be the same thing (e.g. sensor-{serial})`,
    );
  const attributes = stringRecord(raw.attributes, 'attributes');
  for (const [name, pattern] of Object.entries(attributes ?? {})) {
    if (!ATTRIBUTE_NAME_RE.test(name))
      throw new ActivatorConfigError(
        `attributes.${name}`,
        'is not an AWS IoT attribute name ([a-zA-Z0-9_.,@/:#-]{1,128})',
      );
    for (const p of patternParts(pattern, `attributes.${name}`))
      if ('name' in p && !matcher.names.includes(p.name))
        throw new ActivatorConfigError(
          `attributes.${name}`,
          `uses {${p.name}}, which the thing name "${thingName}" does not carry (placeholders available: ${matcher.names.map((n) => `{${n}}`).join(', ')})`,
        );
  }
  const caText = raw.caCertificates;
  const pems = Array.isArray(caText)
    ? caText.flatMap((t, i) => {
        if (typeof t !== 'string') throw new ActivatorConfigError(`caCertificates.${i}`, 'must be PEM text');
        return pemCertificates(t);
      })
    : typeof caText === 'string'
      ? pemCertificates(caText)
      : [];
  if (!pems.length)
    throw new ActivatorConfigError(
      'caCertificates',
      'no factory CA certificate (PEM) is configured; without one no certificate can be activated',
    );
  const cas = pems.map((pem, i) => {
    let certificate: X509Certificate;
    try {
      certificate = new X509Certificate(pem);
    } catch (e) {
      throw new ActivatorConfigError(
        `caCertificates.${i}`,
        `is not a readable certificate: ${(e as Error).message}`,
      );
    }
    if (!certificate.ca)
      throw new ActivatorConfigError(
        `caCertificates.${i}`,
        `${oneLine(certificate.subject)} is not a CA certificate (basicConstraints CA:FALSE)`,
      );
    return { certificate, certificateId: certificateIdOf(pem), subject: oneLine(certificate.subject) };
  });
  return {
    settings: {
      profile,
      thingName,
      policyName,
      ...(thingType !== undefined ? { thingType } : {}),
      ...(subject ? { subject } : {}),
      ...(attributes ? { attributes } : {}),
    },
    cas,
    matchThingName: matcher.match,
  };
}

const oneLine = (subject: string): string => subject.split('\n').join(', ');

/** The registered event, or why it is not one. */
export function parseRegisteredEvent(event: unknown): RegisteredEvent | { problem: string } {
  if (!isRecord(event))
    return { problem: `the event is ${JSON.stringify(event)?.slice(0, 80)}, not a JSON object` };
  const id = event.certificateId;
  const ca = event.caCertificateId;
  const hex64 = /^[a-f0-9]{64}$/;
  if (typeof id !== 'string' || !hex64.test(id))
    return {
      problem: `the event's certificateId is ${JSON.stringify(id)}, not a 64-hex-digit certificate id`,
    };
  if (typeof ca !== 'string' || !hex64.test(ca))
    return {
      problem: `the event's caCertificateId is ${JSON.stringify(ca)}, not a 64-hex-digit certificate id`,
    };
  return {
    certificateId: id,
    caCertificateId: ca,
    ...(typeof event.certificateStatus === 'string' ? { certificateStatus: event.certificateStatus } : {}),
    ...(typeof event.awsAccountId === 'string' ? { awsAccountId: event.awsAccountId } : {}),
    ...(typeof event.timestamp === 'number' ? { timestamp: event.timestamp } : {}),
  };
}

/** The subject as attribute → value (the first value of each attribute). */
function subjectOf(cert: X509Certificate): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of cert.subject.split('\n')) {
    const i = line.indexOf('=');
    if (i <= 0) continue;
    const k = line.slice(0, i);
    if (!(k in out)) out[k] = line.slice(i + 1);
  }
  return out;
}

/**
 * Decides for one event. `certificate` is DescribeCertificate's answer for the event's
 * certificate id (undefined: AWS does not know it).
 */
export function decide(
  config: CompiledConfig,
  event: RegisteredEvent,
  certificate: CertificateView | undefined,
  now: Date,
): Decision {
  const id = event.certificateId;
  const refuse = (code: RefusalCode, reason: string): Decision => ({
    action: 'refuse',
    certificateId: id,
    code,
    reason,
  });
  if (!certificate) return refuse('JITR_CERTIFICATE_UNKNOWN', `AWS IoT does not know certificate ${id}`);
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(certificate.certificatePem);
  } catch (e) {
    return refuse(
      'JITR_CERTIFICATE_MISMATCH',
      `the PEM AWS IoT returned for ${id} is not a readable certificate: ${(e as Error).message}`,
    );
  }
  const actualId = createHash('sha256').update(leaf.raw).digest('hex');
  if (actualId !== id || certificate.certificateId !== id)
    return refuse(
      'JITR_CERTIFICATE_MISMATCH',
      `the certificate AWS IoT described has id ${actualId}, not the event's ${id}`,
    );
  if (certificate.status === 'ACTIVE')
    return {
      action: 'none',
      certificateId: id,
      reason: `certificate ${id} is ACTIVE already; nothing to do (a replayed event)`,
    };
  if (certificate.status !== 'PENDING_ACTIVATION')
    return refuse(
      'JITR_CERTIFICATE_STATUS',
      `certificate ${id} is ${certificate.status}; only PENDING_ACTIVATION certificates are activated (an operator's INACTIVE or REVOKED stands)`,
    );
  const signer = config.cas.find(
    (ca) => leaf.checkIssued(ca.certificate) && leaf.verify(ca.certificate.publicKey),
  );
  if (!signer)
    return refuse(
      'JITR_NOT_SIGNED_BY_FACTORY_CA',
      `certificate ${id} (issuer ${oneLine(leaf.issuer)}) is not signed by any of the ${config.cas.length} configured factory CA certificate(s) (${config.cas.map((c) => c.subject).join('; ')}); provline did not sign it, so it is not activated`,
    );
  const notBefore = new Date(leaf.validFrom);
  const notAfter = new Date(leaf.validTo);
  if (now < notBefore || now > notAfter)
    return refuse(
      'JITR_CERTIFICATE_NOT_VALID_NOW',
      `certificate ${id} is valid from ${notBefore.toISOString()} to ${notAfter.toISOString()}, not at ${now.toISOString()}`,
    );
  const subject = subjectOf(leaf);
  const cn = subject.CN;
  const s = config.settings;
  if (cn === undefined)
    return refuse(
      'JITR_SUBJECT_MISMATCH',
      `certificate ${id} has no CN; the profile ${s.profile} expects the thing name (${s.thingName}) there`,
    );
  const values = THING_NAME_RE.test(cn) ? config.matchThingName(cn) : undefined;
  if (!values)
    return refuse(
      'JITR_SUBJECT_MISMATCH',
      `certificate ${id} has CN "${cn}", which is not a thing name of the form ${s.thingName} (profile ${s.profile})`,
    );
  for (const [attr, want] of Object.entries(s.subject ?? {}))
    if (subject[attr] !== want)
      return refuse(
        'JITR_SUBJECT_MISMATCH',
        `certificate ${id} has ${attr}=${subject[attr] === undefined ? '(none)' : `"${subject[attr]}"`} in its subject; the profile ${s.profile} puts ${attr}="${want}" there`,
      );
  const attributes: Record<string, string> = {};
  for (const [name, pattern] of Object.entries(s.attributes ?? {})) {
    const value = fill(patternParts(pattern, `attributes.${name}`), values);
    if (!ATTRIBUTE_VALUE_RE.test(value))
      return refuse(
        'JITR_SUBJECT_MISMATCH',
        `the attribute ${name} would be "${value}", which AWS IoT does not accept as an attribute value`,
      );
    attributes[name] = value;
  }
  return {
    action: 'activate',
    certificateId: id,
    certificateArn: certificate.certificateArn,
    thingName: cn,
    attributes,
    ...(s.thingType !== undefined ? { thingType: s.thingType } : {}),
    policyName: s.policyName,
    caCertificateId: signer.certificateId,
    reason: `certificate ${id} is signed by the factory CA ${signer.subject} and names thing ${cn}; activating it`,
  };
}
