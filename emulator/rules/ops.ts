/**
 * AWS IoT topic rules on the control plane (MODEL: CreateTopicRule, GetTopicRule,
 * ListTopicRules, ReplaceTopicRule, DeleteTopicRule, EnableTopicRule, DisableTopicRule).
 *
 * Shapes and errors are AWS's: the rule name is `[a-zA-Z0-9_]+` (1..128), the request body of
 * Create/Replace is the TopicRulePayload itself, a second Create of a name is
 * ResourceAlreadyExistsException, and a rule that does not exist is UnauthorizedException
 * ("Access to topic rule '<name>' was denied"), which is what AWS answers for one. What the
 * stand-in cannot run is refused at creation with what it supports: SQL other than
 * `SELECT * FROM '<topic filter>'` (sql.ts) and actions other than `lambda`.
 */
import { IotError, invalid } from '../errors.js';
import { bool, paginate, qbool, qint, str } from '../iot/members.js';
import type { Ctx, Handler } from '../iot/model.js';
import { LAMBDA_ARN } from '../mqtt/hooks.js';
import { filterMatches } from '../mqtt/topics.js';
import { Validation } from '../validate.js';
import { SQL_VERSIONS, parseRuleSql } from './sql.js';

/** The store collection of topic rules, keyed by rule name. */
export const RULES_COLLECTION = 'topicRules';

export interface LambdaRuleAction {
  lambda: { functionArn: string };
}

export interface TopicRuleRec {
  ruleName: string;
  ruleArn: string;
  sql: string;
  /** The FROM topic filter, parsed once at creation. */
  topicFilter: string;
  description?: string;
  actions: LambdaRuleAction[];
  errorAction?: LambdaRuleAction;
  ruleDisabled: boolean;
  awsIotSqlVersion: string;
  /** Epoch seconds. */
  createdAt: number;
}

const RULE_NAME = { min: 1, max: 128, pattern: /^[a-zA-Z0-9_]+$/, patternText: '^[a-zA-Z0-9_]+$' };
const MAX_ACTIONS = 10;
const SUPPORTED_ACTIONS = 'lambda';

export const ruleArn = (ctx: Ctx, name: string): string =>
  `arn:aws:iot:${ctx.region}:${ctx.account}:rule/${name}`;

function checkName(name: string): void {
  new Validation().check('ruleName', name, RULE_NAME).done();
}

function denied(name: string): IotError {
  return new IotError('UnauthorizedException', `Access to topic rule '${name}' was denied`);
}

export function getRule(ctx: Ctx, name: string): TopicRuleRec {
  const rec = ctx.store.get<TopicRuleRec>(RULES_COLLECTION, name);
  if (!rec) throw denied(name);
  return rec;
}

function action(v: unknown, field: string): LambdaRuleAction {
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw invalid(
      `Value at '${field}' must be an object with one action, e.g. {"lambda": {"functionArn": "..."}}`,
    );
  const kinds = Object.keys(v).filter((k) => (v as Record<string, unknown>)[k] != null);
  if (kinds.length !== 1)
    throw invalid(
      `${field} must name exactly one action; it names ${kinds.length ? kinds.join(', ') : 'none'}`,
    );
  const kind = kinds[0]!;
  if (kind !== 'lambda')
    throw invalid(
      `${field} is a "${kind}" action; the AWS IoT stand-in runs only ${SUPPORTED_ACTIONS} actions ({"lambda": {"functionArn": "arn:aws:lambda:<region>:<account>:function:<name>"}})`,
    );
  const lambda = (v as { lambda: unknown }).lambda;
  const functionArn =
    typeof lambda === 'object' && lambda !== null
      ? (lambda as { functionArn?: unknown }).functionArn
      : undefined;
  if (typeof functionArn !== 'string')
    throw invalid(
      `1 validation error detected: Value null at '${field}.lambda.functionArn' failed to satisfy constraint: Member must not be null`,
    );
  if (!LAMBDA_ARN.test(functionArn))
    throw invalid(
      `${field}.lambda.functionArn "${functionArn}" is not a Lambda function ARN (arn:aws:lambda:<region>:<12-digit account>:function:<name>[:<qualifier>])`,
    );
  return { lambda: { functionArn } };
}

/** Checks a TopicRulePayload (the request body) and builds the record. */
function fromPayload(ctx: Ctx, name: string, body: Record<string, unknown>, createdAt: number): TopicRuleRec {
  const sql = str(body, 'sql');
  const actions = body.actions;
  const v = new Validation()
    .required('topicRulePayload.sql', sql)
    .required('topicRulePayload.actions', actions);
  v.done();
  if (!Array.isArray(actions)) throw invalid("Value at 'topicRulePayload.actions' must be a list");
  if (actions.length > MAX_ACTIONS)
    throw invalid(
      `1 validation error detected: Value at 'topicRulePayload.actions' failed to satisfy constraint: Member must have length less than or equal to ${MAX_ACTIONS}`,
    );
  const version = str(body, 'awsIotSqlVersion') ?? '2015-10-08';
  if (!(SQL_VERSIONS as readonly string[]).includes(version))
    throw invalid(`awsIotSqlVersion "${version}" is not one of ${SQL_VERSIONS.join(', ')}`);
  const parsed = parseRuleSql(sql!);
  if ('kind' in parsed)
    throw parsed.kind === 'parse'
      ? new IotError('SqlParseException', parsed.message)
      : invalid(parsed.message);
  const description = str(body, 'description');
  const errorAction =
    body.errorAction == null ? undefined : action(body.errorAction, 'topicRulePayload.errorAction');
  return {
    ruleName: name,
    ruleArn: ruleArn(ctx, name),
    sql: sql!,
    topicFilter: parsed.topicFilter,
    ...(description !== undefined ? { description } : {}),
    actions: actions.map((a, i) => action(a, `topicRulePayload.actions.${i + 1}.member`)),
    ...(errorAction ? { errorAction } : {}),
    ruleDisabled: bool(body, 'ruleDisabled') ?? false,
    awsIotSqlVersion: version,
    createdAt,
  };
}

/** The enabled rules whose FROM filter matches `topic`. */
export function rulesFor(ctx: Ctx, topic: string): TopicRuleRec[] {
  return ctx.store
    .values<TopicRuleRec>(RULES_COLLECTION)
    .filter((r) => !r.ruleDisabled && filterMatches(r.topicFilter, topic));
}

export function ruleOps(ctx: Ctx): Record<string, Handler> {
  const { store } = ctx;
  const setDisabled = (name: string, ruleDisabled: boolean): undefined => {
    checkName(name);
    const rec = getRule(ctx, name);
    if (rec.ruleDisabled !== ruleDisabled) store.put(RULES_COLLECTION, name, { ...rec, ruleDisabled });
    return undefined;
  };
  return {
    CreateTopicRule: (r) => {
      const name = r.path.ruleName!;
      checkName(name);
      if (store.has(RULES_COLLECTION, name))
        throw new IotError('ResourceAlreadyExistsException', `Rule ${name} already exists.`, {
          resourceId: name,
          resourceArn: ruleArn(ctx, name),
        });
      store.put(RULES_COLLECTION, name, fromPayload(ctx, name, r.body, ctx.now()));
      return undefined;
    },

    ReplaceTopicRule: (r) => {
      const name = r.path.ruleName!;
      checkName(name);
      const old = getRule(ctx, name);
      store.put(RULES_COLLECTION, name, fromPayload(ctx, name, r.body, old.createdAt));
      return undefined;
    },

    GetTopicRule: (r) => {
      const name = r.path.ruleName!;
      checkName(name);
      const rec = getRule(ctx, name);
      return {
        ruleArn: rec.ruleArn,
        rule: {
          ruleName: rec.ruleName,
          sql: rec.sql,
          ...(rec.description !== undefined ? { description: rec.description } : {}),
          createdAt: rec.createdAt,
          actions: rec.actions,
          ruleDisabled: rec.ruleDisabled,
          awsIotSqlVersion: rec.awsIotSqlVersion,
          ...(rec.errorAction ? { errorAction: rec.errorAction } : {}),
        },
      };
    },

    ListTopicRules: (r) => {
      const topic = r.query.get('topic');
      const disabled = qbool(r.query, 'ruleDisabled');
      const size = qint(r.query, 'maxResults', 1, 10_000) ?? 1000;
      const all = store
        .values<TopicRuleRec>(RULES_COLLECTION)
        .filter((x) => disabled === undefined || x.ruleDisabled === disabled)
        .filter((x) => topic === null || x.topicFilter === topic || filterMatches(x.topicFilter, topic))
        .sort((a, b) => (a.ruleName < b.ruleName ? -1 : 1));
      const page = paginate(all, r.query.get('nextToken'), size);
      return {
        rules: page.items.map((x) => ({
          ruleArn: x.ruleArn,
          ruleName: x.ruleName,
          topicPattern: x.topicFilter,
          createdAt: x.createdAt,
          ruleDisabled: x.ruleDisabled,
        })),
        ...(page.next ? { nextToken: page.next } : {}),
      };
    },

    DeleteTopicRule: (r) => {
      const name = r.path.ruleName!;
      checkName(name);
      getRule(ctx, name);
      store.del(RULES_COLLECTION, name);
      return undefined;
    },

    EnableTopicRule: (r) => setDisabled(r.path.ruleName!, false),
    DisableTopicRule: (r) => setDisabled(r.path.ruleName!, true),
  };
}
