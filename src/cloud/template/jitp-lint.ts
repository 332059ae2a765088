/**
 * The JITP template lint, run before anything is signed or registered: a template AWS runs on
 * a device's first connect can only use what AWS takes from the device certificate
 * (aws-iot.md §2.3, §3.6), so problems that would leave every device PENDING_ACTIVATION in
 * the field are found at the desk. Pure: the template and the subject attributes the profile
 * writes go in, the problems come out, each naming the parameter and what would be valid.
 */
import { analyseTemplate } from './evaluate.js';

/** JITP pseudo-parameter -> the subject attribute AWS reads it from (Id is AWS's own). */
export const JITP_SUBJECT_PARAMETERS: Readonly<Record<string, string>> = {
  'AWS::IoT::Certificate::CommonName': 'CN',
  'AWS::IoT::Certificate::Country': 'C',
  'AWS::IoT::Certificate::Organization': 'O',
  'AWS::IoT::Certificate::OrganizationalUnit': 'OU',
  'AWS::IoT::Certificate::DistinguishedNameQualifier': 'dnQualifier',
  'AWS::IoT::Certificate::StateName': 'ST',
  'AWS::IoT::Certificate::SerialNumber': 'serialNumber',
};
export const JITP_CERTIFICATE_ID = 'AWS::IoT::Certificate::Id';

export interface JitpProblem {
  /** Where in the template (JSON-pointer-like). */
  path: string;
  /** The parameter concerned, when there is one. */
  parameter?: string;
  message: string;
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** Every `Ref` target in `v`, with where it is. */
function refs(v: unknown, path: string, out: Array<{ name: string; path: string }>): void {
  if (Array.isArray(v)) return v.forEach((x, i) => refs(x, `${path}/${i}`, out));
  if (!isObject(v)) return;
  if (typeof v.Ref === 'string' && Object.keys(v).length === 1)
    out.push({ name: v.Ref, path: `${path}/Ref` });
  for (const [k, x] of Object.entries(v)) refs(x, `${path}/${k}`, out);
}

/**
 * Lints a JITP template for a profile whose device certificates carry the subject attributes
 * `subjectAttributes` (CN plus the profile's csrSubject keys). Empty when the template is fine.
 */
export function lintJitpTemplate(body: string | object, subjectAttributes: readonly string[]): JitpProblem[] {
  const { template, problems: structural } = analyseTemplate(body, 'jitp');
  const problems: JitpProblem[] = structural.map((p) => ({ path: p.path, message: p.message }));
  if (!template) return problems;
  const doc = (typeof body === 'string' ? JSON.parse(body) : body) as Record<string, unknown>;
  const has = new Set(subjectAttributes);
  const provided = [...Object.entries(JITP_SUBJECT_PARAMETERS)]
    .filter(([, attr]) => has.has(attr))
    .map(([p]) => p);
  const valid = `valid here: ${[JITP_CERTIFICATE_ID, ...provided].join(', ')}`;

  for (const [name, decl] of Object.entries(template.parameters)) {
    const path = `/Parameters/${name}`;
    if (name === JITP_CERTIFICATE_ID) continue;
    const attr = JITP_SUBJECT_PARAMETERS[name];
    if (attr === undefined) {
      problems.push({
        path,
        parameter: name,
        message: `parameter ${name} is not one AWS fills in on a first connect, so JITP cannot resolve it; ${valid}`,
      });
    } else if (!has.has(attr) && decl.default === undefined) {
      problems.push({
        path,
        parameter: name,
        message: `parameter ${name} is read from the subject attribute ${attr}, which the profile does not put into the device certificate (its subject has ${[...has].join(', ')}); add ${attr} to the profile's subject, give the parameter a Default, or use one of: ${[JITP_CERTIFICATE_ID, ...provided].join(', ')}`,
      });
    }
  }

  const found: Array<{ name: string; path: string }> = [];
  refs(doc.Resources, '/Resources', found);
  for (const r of found) {
    if (template.parameters[r.name] === undefined)
      problems.push({
        path: r.path,
        parameter: r.name,
        message: `Ref ${r.name} names no declared parameter; AWS needs every JITP parameter declared in Parameters (${valid})`,
      });
  }

  const certificates = template.resources.filter((r) => r.type === 'AWS::IoT::Certificate');
  if (certificates.length === 0)
    problems.push({
      path: '/Resources',
      message: `the template has no AWS::IoT::Certificate resource; JITP needs one with CertificateId {"Ref": "${JITP_CERTIFICATE_ID}"}`,
    });
  for (const c of certificates) {
    const id = c.properties.CertificateId;
    if (!(isObject(id) && id.Ref === JITP_CERTIFICATE_ID && Object.keys(id).length === 1))
      problems.push({
        path: `/Resources/${c.logicalId}/Properties/CertificateId`,
        parameter: JITP_CERTIFICATE_ID,
        message: `CertificateId of ${c.logicalId} must be {"Ref": "${JITP_CERTIFICATE_ID}"} (the certificate AWS registers on the first connect), not ${JSON.stringify(id)}`,
      });
    else if (template.parameters[JITP_CERTIFICATE_ID] === undefined)
      problems.push({
        path: '/Parameters',
        parameter: JITP_CERTIFICATE_ID,
        message: `${JITP_CERTIFICATE_ID} is used but not declared in Parameters; declare it as {"Type": "String"}`,
      });
  }

  if (!template.resources.some((r) => r.type === 'AWS::IoT::Policy'))
    problems.push({
      path: '/Resources',
      message:
        'the template attaches no policy: add an AWS::IoT::Policy resource with PolicyName (an existing policy) or PolicyDocument, or devices connect with no permissions',
    });
  return problems;
}
