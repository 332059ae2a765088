/**
 * The REST-JSON route table: HTTP method + URI template → operation name, copied from the
 * service model (aws-iot.md §1.1, §3.1, §4.4, §5.2; topic rules from MODEL). Labels are matched per path segment
 * and percent-decoded (thing names may contain ':'; ARNs in labels arrive as one encoded
 * segment). Literal segments win over labels.
 */

export const ROUTES: ReadonlyArray<readonly [method: string, uri: string, operation: string]> = [
  ['POST', '/things/{thingName}', 'CreateThing'],
  ['GET', '/things/{thingName}', 'DescribeThing'],
  ['GET', '/things', 'ListThings'],
  ['PATCH', '/things/{thingName}', 'UpdateThing'],
  ['DELETE', '/things/{thingName}', 'DeleteThing'],
  ['POST', '/thing-types/{thingTypeName}', 'CreateThingType'],
  ['GET', '/thing-types/{thingTypeName}', 'DescribeThingType'],
  ['POST', '/thing-groups/{thingGroupName}', 'CreateThingGroup'],
  ['GET', '/thing-groups/{thingGroupName}', 'DescribeThingGroup'],
  ['PUT', '/thing-groups/addThingToThingGroup', 'AddThingToThingGroup'],
  ['GET', '/things/{thingName}/thing-groups', 'ListThingGroupsForThing'],
  ['POST', '/policies/{policyName}', 'CreatePolicy'],
  ['GET', '/policies/{policyName}', 'GetPolicy'],
  ['GET', '/policies', 'ListPolicies'],
  ['PUT', '/target-policies/{policyName}', 'AttachPolicy'],
  ['POST', '/target-policies/{policyName}', 'DetachPolicy'],
  ['POST', '/attached-policies/{target}', 'ListAttachedPolicies'],
  ['POST', '/policy-targets/{policyName}', 'ListTargetsForPolicy'],
  ['POST', '/certificates', 'CreateCertificateFromCsr'],
  ['POST', '/keys-and-certificate', 'CreateKeysAndCertificate'],
  ['POST', '/certificate/register', 'RegisterCertificate'],
  ['POST', '/certificate/register-no-ca', 'RegisterCertificateWithoutCA'],
  ['GET', '/certificates/{certificateId}', 'DescribeCertificate'],
  ['GET', '/certificates', 'ListCertificates'],
  ['PUT', '/certificates/{certificateId}', 'UpdateCertificate'],
  ['DELETE', '/certificates/{certificateId}', 'DeleteCertificate'],
  ['PUT', '/things/{thingName}/principals', 'AttachThingPrincipal'],
  ['DELETE', '/things/{thingName}/principals', 'DetachThingPrincipal'],
  ['GET', '/things/{thingName}/principals', 'ListThingPrincipals'],
  ['GET', '/principals/things', 'ListPrincipalThings'],
  ['POST', '/things', 'RegisterThing'],
  ['POST', '/thing-registration-tasks', 'StartThingRegistrationTask'],
  ['GET', '/thing-registration-tasks/{taskId}', 'DescribeThingRegistrationTask'],
  ['GET', '/thing-registration-tasks', 'ListThingRegistrationTasks'],
  ['PUT', '/thing-registration-tasks/{taskId}/cancel', 'StopThingRegistrationTask'],
  ['GET', '/thing-registration-tasks/{taskId}/reports', 'ListThingRegistrationTaskReports'],
  ['GET', '/registrationcode', 'GetRegistrationCode'],
  ['DELETE', '/registrationcode', 'DeleteRegistrationCode'],
  ['POST', '/cacertificate', 'RegisterCACertificate'],
  ['GET', '/cacertificate/{caCertificateId}', 'DescribeCACertificate'],
  ['PUT', '/cacertificate/{caCertificateId}', 'UpdateCACertificate'],
  ['GET', '/cacertificates', 'ListCACertificates'],
  ['DELETE', '/cacertificate/{caCertificateId}', 'DeleteCACertificate'],
  ['GET', '/certificates-by-ca/{caCertificateId}', 'ListCertificatesByCA'],
  ['POST', '/provisioning-templates', 'CreateProvisioningTemplate'],
  ['GET', '/provisioning-templates/{templateName}', 'DescribeProvisioningTemplate'],
  ['GET', '/provisioning-templates', 'ListProvisioningTemplates'],
  ['PATCH', '/provisioning-templates/{templateName}', 'UpdateProvisioningTemplate'],
  ['DELETE', '/provisioning-templates/{templateName}', 'DeleteProvisioningTemplate'],
  ['POST', '/provisioning-templates/{templateName}/provisioning-claim', 'CreateProvisioningClaim'],
  ['POST', '/provisioning-templates/{templateName}/versions', 'CreateProvisioningTemplateVersion'],
  [
    'GET',
    '/provisioning-templates/{templateName}/versions/{versionId}',
    'DescribeProvisioningTemplateVersion',
  ],
  ['GET', '/provisioning-templates/{templateName}/versions', 'ListProvisioningTemplateVersions'],
  [
    'DELETE',
    '/provisioning-templates/{templateName}/versions/{versionId}',
    'DeleteProvisioningTemplateVersion',
  ],
  ['GET', '/endpoint', 'DescribeEndpoint'],
  ['POST', '/rules/{ruleName}', 'CreateTopicRule'],
  ['GET', '/rules/{ruleName}', 'GetTopicRule'],
  ['GET', '/rules', 'ListTopicRules'],
  ['PATCH', '/rules/{ruleName}', 'ReplaceTopicRule'],
  ['DELETE', '/rules/{ruleName}', 'DeleteTopicRule'],
  ['POST', '/rules/{ruleName}/enable', 'EnableTopicRule'],
  ['POST', '/rules/{ruleName}/disable', 'DisableTopicRule'],
];

interface Compiled {
  method: string;
  segments: string[];
  operation: string;
  literals: number;
}

const COMPILED: Compiled[] = ROUTES.map(([method, uri, operation]) => {
  const segments = uri.split('/').slice(1);
  return { method, segments, operation, literals: segments.filter((s) => !s.startsWith('{')).length };
}).sort((a, b) => b.literals - a.literals);

export interface RouteMatch {
  operation: string;
  path: Record<string, string>;
}

/** Matches a raw (still encoded) path; undefined if no operation has this method + path. */
export function matchRoute(method: string, rawPath: string): RouteMatch | undefined {
  const parts = rawPath.replace(/\/+$/, '').split('/').slice(1);
  for (const r of COMPILED) {
    if (r.method !== method || r.segments.length !== parts.length) continue;
    const path: Record<string, string> = {};
    let ok = true;
    for (let i = 0; i < parts.length && ok; i++) {
      const seg = r.segments[i]!;
      let value: string;
      try {
        value = decodeURIComponent(parts[i]!);
      } catch {
        ok = false;
        break;
      }
      if (seg.startsWith('{')) {
        if (!value) ok = false;
        else path[seg.slice(1, -1)] = value;
      } else if (seg !== value) ok = false;
    }
    if (ok) return { operation: r.operation, path };
  }
  return undefined;
}
