/**
 * The rules engine: every message the broker routes (a client's publish, the stand-in's own
 * `$aws/events/...`) is matched against the enabled topic rules; each matching rule's `lambda`
 * actions are invoked through the ARN → endpoint map (hooks.ts `Lambdas`) with the message as
 * the event, asynchronously as AWS invokes them (the publisher never waits, the answer is not
 * used). Outcomes go to the reasons log: `rule.invoked` with the function's answer,
 * `rule.failed` with why (no endpoint mapped, unreachable, HTTP error, no answer in time, a
 * payload `SELECT *` cannot pass on); a failed action runs the rule's errorAction, when it has
 * one, with AWS's error payload.
 */
import { randomUUID } from 'node:crypto';
import type { Ctx } from '../iot/model.js';
import type { RecordEvent } from '../mqtt/contract.js';
import type { Lambdas } from '../mqtt/hooks.js';
import { rulesFor, type LambdaRuleAction, type TopicRuleRec } from './ops.js';

export interface RuleMessage {
  topic: string;
  payload: Buffer;
  /** The publishing client; absent for the stand-in's own messages. */
  clientId?: string;
}

export interface RulesEngineOptions {
  /** How long one invocation may take before it counts as failed (default 60 s). */
  budgetMs?: number;
}

export class RulesEngine {
  private readonly inflight = new Set<AbortController>();
  private readonly budgetMs: number;
  private closed = false;

  constructor(
    private readonly ctx: Ctx,
    private readonly lambdas: Lambdas,
    private readonly record: RecordEvent,
    options: RulesEngineOptions = {},
  ) {
    this.budgetMs = options.budgetMs ?? 60_000;
  }

  /** Called for each routed message; returns at once. */
  readonly onMessage = (m: RuleMessage): void => {
    if (this.closed) return;
    const rules = rulesFor(this.ctx, m.topic);
    if (!rules.length) return;
    let event: unknown;
    try {
      event = JSON.parse(m.payload.toString('utf8'));
    } catch {
      for (const rule of rules)
        this.record({
          kind: 'rule.failed',
          topic: m.topic,
          ...(m.clientId ? { clientId: m.clientId } : {}),
          reason: `rule ${rule.ruleName} did not run: the payload on ${m.topic} is not JSON, and the stand-in runs only SELECT * over JSON payloads`,
          details: { ruleName: rule.ruleName },
        });
      return;
    }
    for (const rule of rules) for (const action of rule.actions) void this.invoke(rule, action, event, m);
  };

  private async invoke(
    rule: TopicRuleRec,
    action: LambdaRuleAction,
    event: unknown,
    m: RuleMessage,
  ): Promise<void> {
    const arn = action.lambda.functionArn;
    const base = { topic: m.topic, ...(m.clientId ? { clientId: m.clientId } : {}) };
    const outcome = await this.call(arn, event);
    if (outcome.ok) {
      this.record({
        kind: 'rule.invoked',
        ...base,
        reason: `rule ${rule.ruleName} invoked ${arn} for the message on ${m.topic}`,
        details: { ruleName: rule.ruleName, functionArn: arn, answer: outcome.answer },
      });
      return;
    }
    this.record({
      kind: 'rule.failed',
      ...base,
      reason: `rule ${rule.ruleName}: the lambda action ${arn} failed: ${outcome.reason}`,
      details: { ruleName: rule.ruleName, functionArn: arn },
    });
    if (rule.errorAction) await this.runErrorAction(rule, rule.errorAction, arn, outcome.reason, m, base);
  }

  private async runErrorAction(
    rule: TopicRuleRec,
    errorAction: LambdaRuleAction,
    failedArn: string,
    reason: string,
    m: RuleMessage,
    base: { topic: string; clientId?: string },
  ): Promise<void> {
    const arn = errorAction.lambda.functionArn;
    // The payload AWS sends to an error action (DG rule-error-handling).
    const payload = {
      ruleName: rule.ruleName,
      topic: m.topic,
      cloudwatchTraceId: randomUUID(),
      clientId: m.clientId ?? '',
      base64OriginalPayload: m.payload.toString('base64'),
      failures: [{ failedAction: 'LambdaAction', failedResource: failedArn, errorMessage: reason }],
    };
    const outcome = await this.call(arn, payload);
    this.record({
      kind: outcome.ok ? 'rule.error-action' : 'rule.failed',
      ...base,
      reason: outcome.ok
        ? `rule ${rule.ruleName} ran its error action ${arn}`
        : `rule ${rule.ruleName}: the error action ${arn} failed too: ${outcome.reason}`,
      details: { ruleName: rule.ruleName, functionArn: arn },
    });
  }

  private async call(
    arn: string,
    event: unknown,
  ): Promise<{ ok: true; answer: unknown } | { ok: false; reason: string }> {
    const fn = this.lambdas.get(arn);
    if (!fn)
      return {
        ok: false,
        reason: `no local endpoint is mapped to ${arn}; map one with --lambda ${arn}=<url> or PUT /_emulator/lambdas`,
      };
    const controller = new AbortController();
    this.inflight.add(controller);
    const timer = setTimeout(() => controller.abort(), this.budgetMs);
    try {
      return { ok: true, answer: await fn.invoke(event, controller.signal) };
    } catch (e) {
      return {
        ok: false,
        reason: this.closed
          ? 'the stand-in stopped during the invocation'
          : controller.signal.aborted
            ? `the function did not answer within ${this.budgetMs} ms`
            : (e as Error).message,
      };
    } finally {
      clearTimeout(timer);
      this.inflight.delete(controller);
    }
  }

  /** Aborts the invocations in flight; later messages are ignored. */
  close(): void {
    this.closed = true;
    for (const c of this.inflight) c.abort();
  }
}
