/**
 * AWS IoT policy evaluation (pure): which of the certificate's policies allow or deny an
 * action on a resource, with the reason a person can act on.
 *
 * Rules (AWS IoT developer guide, "AWS IoT Core policies"; IAM policy evaluation logic):
 * - Default deny; an Allow is needed; any matching Deny beats every Allow.
 * - `Action` / `NotAction` and `Resource` / `NotResource` are a string or a list of strings;
 *   `*` matches any run of characters and `?` one character. Actions compare without case,
 *   resources with case. MQTT's `+` and `#` have no special meaning in policy resources.
 * - Policy variables in resources and condition values: `${iot:ClientId}`,
 *   `${iot:Connection.Thing.ThingName}`, `${iot:Connection.Thing.ThingTypeName}`,
 *   `${iot:Connection.Thing.IsAttached}`, `${iot:Connection.Thing.Attributes[name]}`,
 *   `${iot:Certificate.Subject.<Attribute>}` and the escapes `${*}`, `${?}`, `${$}`. The
 *   Thing.* variables resolve only when the client id is the name of a thing attached to the
 *   certificate (IsAttached always resolves, to "true" or "false"). A resource that names an
 *   unresolved variable matches nothing (so an Allow does not apply, and neither does a Deny).
 * - Conditions: StringEquals, StringNotEquals, StringLike, StringNotLike, Bool, ArnEquals,
 *   ArnLike, ArnNotEquals, ArnNotLike, each optionally with IfExists, on the keys above
 *   (without `${}`). Any other operator makes its statement not apply, and says so.
 */

export type IotAction = 'iot:Connect' | 'iot:Publish' | 'iot:Subscribe' | 'iot:Receive' | 'iot:RetainPublish';

/** What the variables resolve to for one connection. */
export interface PolicyVariables {
  clientId: string;
  /** Set only when `clientId` names a thing attached to the certificate. */
  thing?: { thingName: string; thingTypeName?: string; attributes: Record<string, string> };
  /** Subject attributes of the client certificate by short name (CN, O, OU, C, ST, L, …). */
  subject?: Record<string, string>;
}

interface Statement {
  index: number;
  effect: 'Allow' | 'Deny';
  actions: string[] | undefined;
  notActions: string[] | undefined;
  resources: string[] | undefined;
  notResources: string[] | undefined;
  condition: Record<string, Record<string, string[]>> | undefined;
}

export interface ParsedPolicy {
  name: string;
  statements: Statement[];
  /** Set when the stored document could not be read (then it grants nothing). */
  problem?: string;
}

export interface Decision {
  allowed: boolean;
  /** One sentence naming the deciding statement, or why none applied. */
  reason: string;
  policy?: string;
  statement?: number;
}

const list = (v: unknown): string[] | undefined => {
  if (v === undefined) return undefined;
  const arr = Array.isArray(v) ? v : [v];
  return arr.filter((x): x is string => typeof x === 'string');
};

/** Reads a stored policy document; never throws. */
export function parsePolicy(name: string, document: string): ParsedPolicy {
  let doc: unknown;
  try {
    doc = JSON.parse(document);
  } catch {
    return { name, statements: [], problem: 'the document is not JSON' };
  }
  const raw = (doc as { Statement?: unknown } | null)?.Statement;
  const items = Array.isArray(raw) ? raw : raw === undefined ? [] : [raw];
  const statements: Statement[] = [];
  items.forEach((s: unknown, i) => {
    if (typeof s !== 'object' || s === null) return;
    const o = s as Record<string, unknown>;
    const effect = o.Effect === 'Deny' ? 'Deny' : o.Effect === 'Allow' ? 'Allow' : undefined;
    if (!effect) return;
    let condition: Statement['condition'];
    if (typeof o.Condition === 'object' && o.Condition !== null) {
      condition = {};
      for (const [op, body] of Object.entries(o.Condition as Record<string, unknown>)) {
        if (typeof body !== 'object' || body === null) continue;
        const keys: Record<string, string[]> = {};
        for (const [k, v] of Object.entries(body as Record<string, unknown>))
          keys[k] = (Array.isArray(v) ? v : [v]).map((x) => String(x));
        condition[op] = keys;
      }
    }
    statements.push({
      index: i + 1,
      effect,
      actions: list(o.Action),
      notActions: list(o.NotAction),
      resources: list(o.Resource),
      notResources: list(o.NotResource),
      condition,
    });
  });
  return { name, statements };
}

const globCache = new Map<string, RegExp>();

/** The regex body of a glob: `*` any run, `?` one character, the rest literal. */
function globBody(pattern: string): string {
  let body = '';
  for (const ch of pattern)
    body += ch === '*' ? '[\\s\\S]*' : ch === '?' ? '[\\s\\S]' : ch.replace(/[.+^${}()|[\]\\/*?-]/g, '\\$&');
  return body;
}

/** `*` any run, `?` one character; everything else literal. */
export function globMatch(pattern: string, value: string, ignoreCase = false): boolean {
  if (!pattern.includes('*') && !pattern.includes('?'))
    return ignoreCase ? pattern.toLowerCase() === value.toLowerCase() : pattern === value;
  const key = `${ignoreCase ? 'i' : 'c'}${pattern}`;
  let re = globCache.get(key);
  if (!re) {
    re = new RegExp(`^${globBody(pattern)}$`, ignoreCase ? 'i' : '');
    if (globCache.size > 10_000) globCache.clear();
    globCache.set(key, re);
  }
  return re.test(value);
}

/** The value of a condition key / variable name, or undefined when it does not resolve. */
export function variable(name: string, vars: PolicyVariables): string | undefined {
  if (name === 'iot:ClientId') return vars.clientId;
  if (name === 'iot:Connection.Thing.IsAttached') return vars.thing ? 'true' : 'false';
  if (name === 'iot:Connection.Thing.ThingName') return vars.thing?.thingName;
  if (name === 'iot:Connection.Thing.ThingTypeName') return vars.thing?.thingTypeName;
  const attr = /^iot:Connection\.Thing\.Attributes\[(.+)\]$/.exec(name);
  if (attr) return vars.thing?.attributes[attr[1]!];
  const subj = /^iot:Certificate\.Subject\.(.+)$/.exec(name);
  if (subj) return vars.subject?.[SUBJECT_NAMES[subj[1]!] ?? subj[1]!];
  return undefined;
}

const SUBJECT_NAMES: Record<string, string> = {
  CommonName: 'CN',
  Organization: 'O',
  OrganizationalUnit: 'OU',
  Country: 'C',
  State: 'ST',
  Locality: 'L',
  SerialNumber: 'serialNumber',
  DistinguishedNameQualifier: 'dnQualifier',
};

/** Substitutes `${…}` variables; undefined when one of them does not resolve. */
export function substitute(text: string, vars: PolicyVariables): string | undefined {
  if (!text.includes('${')) return text;
  let unresolved = false;
  const out = text.replace(/\$\{([^}]*)\}/g, (_m, name: string) => {
    if (name === '*' || name === '?' || name === '$') return `\uE000${name}`;
    const v = variable(name, vars);
    if (v === undefined) unresolved = true;
    return v ?? '';
  });
  return unresolved ? undefined : out;
}

/** Glob match where `\uE000*`, `\uE000?`, `\uE000$` (escaped by substitute) stand for literal characters. */
function resourceMatch(pattern: string, value: string): boolean {
  if (!pattern.includes('\uE000')) return globMatch(pattern, value);
  const parts = pattern.split(/\uE000([*?$])/);
  const body = parts.map((p, i) => (i % 2 === 1 ? `\\${p}` : globBody(p))).join('');
  return new RegExp(`^${body}$`).test(value);
}

function matchesAny(patterns: string[], value: string, vars: PolicyVariables): boolean {
  return patterns.some((p) => {
    const s = substitute(p, vars);
    return s !== undefined && resourceMatch(s, value);
  });
}

const STRING_OPS = new Set(['StringEquals', 'StringNotEquals', 'StringLike', 'StringNotLike', 'Bool']);
const ARN_OPS = new Set(['ArnEquals', 'ArnLike', 'ArnNotEquals', 'ArnNotLike']);

/** True when every condition holds; a string naming the problem when one cannot be evaluated. */
function conditionHolds(
  condition: NonNullable<Statement['condition']>,
  vars: PolicyVariables,
): boolean | string {
  for (const [rawOp, keys] of Object.entries(condition)) {
    const ifExists = rawOp.endsWith('IfExists');
    const op = ifExists ? rawOp.slice(0, -'IfExists'.length) : rawOp;
    if (!STRING_OPS.has(op) && !ARN_OPS.has(op))
      return `condition operator ${rawOp} is not supported by the stand-in`;
    for (const [key, wanted] of Object.entries(keys)) {
      const actual = variable(key, vars);
      if (actual === undefined) {
        if (ifExists) continue;
        if (op.includes('Not')) continue;
        return false;
      }
      const values = wanted.map((w) => substitute(w, vars)).filter((w): w is string => w !== undefined);
      const like = op.endsWith('Like');
      const hit =
        op === 'Bool'
          ? values.some((w) => w.toLowerCase() === actual.toLowerCase())
          : values.some((w) => (like ? resourceMatch(w, actual) : w === actual));
      if (op.includes('Not') ? hit : !hit) return false;
    }
  }
  return true;
}

function actionApplies(s: Statement, action: string): boolean {
  if (s.actions) return s.actions.some((a) => globMatch(a, action, true));
  if (s.notActions) return !s.notActions.some((a) => globMatch(a, action, true));
  return false;
}

function resourceApplies(s: Statement, resource: string, vars: PolicyVariables): boolean {
  if (s.resources) return matchesAny(s.resources, resource, vars);
  if (s.notResources) return !matchesAny(s.notResources, resource, vars);
  return false;
}

/** Decides `action` on `resource` (a full ARN) under `policies`. */
export function evaluate(
  policies: readonly ParsedPolicy[],
  action: IotAction,
  resource: string,
  vars: PolicyVariables,
): Decision {
  const what = `${action} on ${resource}`;
  if (!policies.length)
    return { allowed: false, reason: `the certificate has no policy attached, so nothing allows ${what}` };
  let allow: { policy: string; statement: number } | undefined;
  const skipped: string[] = [];
  for (const p of policies) {
    for (const s of p.statements) {
      if (!actionApplies(s, action) || !resourceApplies(s, resource, vars)) continue;
      if (s.condition) {
        const held = conditionHolds(s.condition, vars);
        if (typeof held === 'string') {
          skipped.push(`policy ${p.name} statement ${s.index}: ${held}`);
          continue;
        }
        if (!held) {
          skipped.push(`policy ${p.name} statement ${s.index}: its Condition does not hold`);
          continue;
        }
      }
      if (s.effect === 'Deny')
        return {
          allowed: false,
          reason: `policy ${p.name} statement ${s.index} explicitly denies ${what}`,
          policy: p.name,
          statement: s.index,
        };
      allow ??= { policy: p.name, statement: s.index };
    }
  }
  if (allow)
    return {
      allowed: true,
      reason: `policy ${allow.policy} statement ${allow.statement} allows ${what}`,
      ...allow,
    };
  const names = policies.map((p) => p.name).join(', ');
  const broken = policies.filter((p) => p.problem).map((p) => `${p.name}: ${p.problem}`);
  return {
    allowed: false,
    reason: `no statement in the certificate's policies (${names}) allows ${what}${
      skipped.length ? ` (${skipped.join('; ')})` : ''
    }${broken.length ? ` [${broken.join('; ')}]` : ''}`,
  };
}
