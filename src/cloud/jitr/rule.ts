/**
 * The IoT rule that sends a CA's registered events to the activator's Lambda:
 * `SELECT * FROM '$aws/events/certificates/registered/<caCertificateId>'` with one lambda
 * action. `ensureActivatorRule` makes it so, idempotently: created when missing, replaced
 * when it says something else, enabled when disabled, left alone when it is right.
 */
import {
  CreateTopicRuleCommand,
  EnableTopicRuleCommand,
  GetTopicRuleCommand,
  ReplaceTopicRuleCommand,
  type TopicRulePayload,
} from '@aws-sdk/client-iot';
import { awsErrorName, awsFailure } from '../aws-errors.js';
import type { CloudClients } from '../clients.js';
import { withRetries } from '../pacing.js';

export const registeredTopic = (caCertificateId: string): string =>
  `$aws/events/certificates/registered/${caCertificateId}`;

/** The rule name for a profile's CA: `provline_jitr_<profile>_<first 12 hex of the CA id>`. */
export function activatorRuleName(profile: string, caCertificateId: string): string {
  return `provline_jitr_${profile.replace(/[^a-zA-Z0-9_]/g, '_')}_${caCertificateId.slice(0, 12)}`.slice(
    0,
    128,
  );
}

export function activatorRulePayload(
  caCertificateId: string,
  functionArn: string,
  profile: string,
): TopicRulePayload {
  return {
    sql: `SELECT * FROM '${registeredTopic(caCertificateId)}'`,
    description: `provline JITR activator for profile ${profile}`,
    actions: [{ lambda: { functionArn } }],
    ruleDisabled: false,
    awsIotSqlVersion: '2016-03-23',
  };
}

export type RuleOutcome = 'created' | 'replaced' | 'enabled' | 'unchanged';

export async function ensureActivatorRule(
  c: CloudClients,
  ruleName: string,
  payload: TopicRulePayload,
): Promise<RuleOutcome> {
  const send = <T>(what: string, fn: () => Promise<T>): Promise<T> =>
    withRetries(fn, { retry: 'transient', what }).catch((e: unknown) => {
      throw awsFailure('AWS_REQUEST_FAILED', `${what} ${ruleName}`, e);
    });
  let current;
  try {
    current = await withRetries(() => c.iot.send(new GetTopicRuleCommand({ ruleName })), {
      retry: 'transient',
      what: 'GetTopicRule',
    });
  } catch (e) {
    // AWS answers UnauthorizedException for a rule that does not exist.
    if (!['UnauthorizedException', 'ResourceNotFoundException'].includes(awsErrorName(e)))
      throw awsFailure('AWS_REQUEST_FAILED', `GetTopicRule ${ruleName}`, e);
  }
  if (!current?.rule) {
    await send('CreateTopicRule', () =>
      c.iot.send(new CreateTopicRuleCommand({ ruleName, topicRulePayload: payload })),
    );
    return 'created';
  }
  const rule = current.rule;
  const sameActions = JSON.stringify(rule.actions ?? []) === JSON.stringify(payload.actions);
  if (rule.sql !== payload.sql || !sameActions) {
    await send('ReplaceTopicRule', () =>
      c.iot.send(new ReplaceTopicRuleCommand({ ruleName, topicRulePayload: payload })),
    );
    return 'replaced';
  }
  if (rule.ruleDisabled) {
    await send('EnableTopicRule', () => c.iot.send(new EnableTopicRuleCommand({ ruleName })));
    return 'enabled';
  }
  return 'unchanged';
}
