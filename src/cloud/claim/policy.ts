/**
 * The claim policy (pure): the least-privilege policy of seed 003, generated from the fleet
 * template's name, and a check that a policy (generated or the profile's own) lets a device do
 * the whole fleet exchange. A claim that cannot subscribe to its answers fails on the line with
 * a subscribe timeout and a hang-up; this says which permission is missing before any device
 * gets the claim.
 */

export type DeviceKeyMode = 'csr' | 'keys';

export interface ClaimPolicyInput {
  region: string;
  account: string;
  templateName: string;
  /** The literal start of every client id the devices use (their thing names), may be empty. */
  clientIdPrefix: string;
}

/** The request topics a claim may publish (both create APIs, and RegisterThing on this template). */
export function fleetTopicPrefixes(templateName: string): string[] {
  return [
    '$aws/certificates/create/',
    '$aws/certificates/create-from-csr/',
    `$aws/provisioning-templates/${templateName}/provision/`,
  ];
}

export function claimPolicy(i: ClaimPolicyInput): Record<string, unknown> {
  const arn = `arn:aws:iot:${i.region}:${i.account}`;
  const prefixes = fleetTopicPrefixes(i.templateName);
  return {
    Version: '2012-10-17',
    Statement: [
      { Effect: 'Allow', Action: 'iot:Connect', Resource: `${arn}:client/${i.clientIdPrefix}*` },
      {
        Effect: 'Allow',
        Action: ['iot:Publish', 'iot:Receive'],
        Resource: prefixes.map((p) => `${arn}:topic/${p}*`),
      },
      {
        Effect: 'Allow',
        Action: 'iot:Subscribe',
        Resource: prefixes.map((p) => `${arn}:topicfilter/${p}*`),
      },
    ],
  };
}

/** The literal start of a thing-name pattern, up to its first placeholder. */
export function clientIdPrefixOf(thingNamePattern: string): string {
  const i = thingNamePattern.indexOf('{');
  return i < 0 ? thingNamePattern : thingNamePattern.slice(0, i);
}

interface Statement {
  effect: 'Allow' | 'Deny';
  actions: string[];
  resources: string[];
}

const asList = (v: unknown): string[] =>
  typeof v === 'string' ? [v] : Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];

function statements(doc: unknown): Statement[] | string {
  if (typeof doc !== 'object' || doc === null) return 'the policy is not a JSON object';
  const st = (doc as { Statement?: unknown }).Statement;
  const list = Array.isArray(st) ? st : st === undefined ? [] : [st];
  const out: Statement[] = [];
  for (const s of list) {
    if (typeof s !== 'object' || s === null) return 'a Statement is not an object';
    const r = s as Record<string, unknown>;
    if (r.Effect !== 'Allow' && r.Effect !== 'Deny') return 'a Statement has no Effect Allow or Deny';
    out.push({ effect: r.Effect, actions: asList(r.Action), resources: asList(r.Resource) });
  }
  return out;
}

/** IoT policy wildcards: `*` any run, `?` one character; policy variables match nothing here. */
function globMatch(pattern: string, value: string): boolean {
  if (pattern.includes('${')) return false;
  const re = new RegExp(
    `^${pattern
      .replace(/[.+^$()|[\]\\{}]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.')}$`,
  );
  return re.test(value);
}

function allowed(sts: Statement[], action: string, resource: string): boolean {
  const hits = (s: Statement): boolean =>
    s.actions.some((a) => globMatch(a, action)) && s.resources.some((r) => globMatch(r, resource));
  if (sts.some((s) => s.effect === 'Deny' && hits(s))) return false;
  return sts.some((s) => s.effect === 'Allow' && hits(s));
}

export interface PolicyNeeds {
  region: string;
  account: string;
  templateName: string;
  /** Client ids the devices will connect with (a sample of the lot's thing names). */
  clientIds: string[];
  deviceKey: DeviceKeyMode;
}

/** Every permission the fleet exchange needs that `doc` does not grant, as sentences. */
export function claimPolicyGaps(doc: unknown, n: PolicyNeeds): string[] {
  const sts = statements(doc);
  if (typeof sts === 'string') return [sts];
  const arn = `arn:aws:iot:${n.region}:${n.account}`;
  const gaps: string[] = [];
  for (const id of n.clientIds)
    if (!allowed(sts, 'iot:Connect', `${arn}:client/${id}`))
      gaps.push(`iot:Connect on ${arn}:client/${id} (a device connects with its thing name as client id)`);
  const create =
    n.deviceKey === 'csr' ? '$aws/certificates/create-from-csr/json' : '$aws/certificates/create/json';
  for (const request of [create, `$aws/provisioning-templates/${n.templateName}/provision/json`]) {
    if (!allowed(sts, 'iot:Publish', `${arn}:topic/${request}`))
      gaps.push(`iot:Publish on ${arn}:topic/${request} (the request)`);
    for (const answer of [`${request}/accepted`, `${request}/rejected`]) {
      if (!allowed(sts, 'iot:Subscribe', `${arn}:topicfilter/${answer}`))
        gaps.push(
          `iot:Subscribe on ${arn}:topicfilter/${answer} (the device could not subscribe to its answer)`,
        );
      if (!allowed(sts, 'iot:Receive', `${arn}:topic/${answer}`))
        gaps.push(`iot:Receive on ${arn}:topic/${answer} (the answer would not be delivered)`);
    }
  }
  return gaps;
}
