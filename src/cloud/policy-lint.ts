/**
 * A structural check of an AWS IoT policy document before anything is created with it: the
 * shape AWS accepts (Version, Statement with Effect, Action and Resource). Whether the policy
 * lets a device connect is proven by the device connecting, not here. Pure.
 */

/** Each problem as a sentence naming where it is; empty when the document is fine. */
export function lintPolicy(text: string): string[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    return [`the policy is not JSON: ${(e as Error).message}`];
  }
  if (!isObject(doc)) return ['the policy must be a JSON object'];
  const problems: string[] = [];
  if (doc.Version !== undefined && doc.Version !== '2012-10-17')
    problems.push(`Version is ${JSON.stringify(doc.Version)}; AWS IoT policies use "2012-10-17"`);
  const statements = Array.isArray(doc.Statement)
    ? doc.Statement
    : doc.Statement === undefined
      ? []
      : [doc.Statement];
  if (!statements.length) problems.push('the policy has no Statement');
  for (const [i, s] of statements.entries()) {
    const at = `Statement[${i}]`;
    if (!isObject(s)) {
      problems.push(`${at} is not an object`);
      continue;
    }
    if (s.Effect !== 'Allow' && s.Effect !== 'Deny')
      problems.push(`${at}.Effect is ${JSON.stringify(s.Effect)}; it must be "Allow" or "Deny"`);
    for (const field of ['Action', 'Resource'] as const) {
      const v = s[field];
      const list = typeof v === 'string' ? [v] : Array.isArray(v) ? v : undefined;
      if (!list?.length || list.some((x) => typeof x !== 'string' || !x))
        problems.push(`${at}.${field} must be a string or a list of strings`);
    }
    const actions = typeof s.Action === 'string' ? [s.Action] : Array.isArray(s.Action) ? s.Action : [];
    for (const a of actions)
      if (typeof a === 'string' && a !== '*' && !/^iot:[A-Za-z*]+$/.test(a))
        problems.push(`${at}.Action "${a}" is not an AWS IoT action (iot:Connect, iot:Publish, …)`);
  }
  return problems;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
