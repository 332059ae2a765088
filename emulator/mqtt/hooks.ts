/**
 * Pre-provisioning hooks (aws-iot.md §4.5) and how the stand-in runs "a Lambda".
 *
 * A Lambda function is anything behind the `LambdaFunction` interface: given the event and an
 * AbortSignal, it resolves with the function's JSON answer or rejects with the reason it
 * failed. `Lambdas` maps function ARNs to functions; today a mapping is an HTTP endpoint (the
 * event is POSTed as JSON, the JSON body of a 2xx answer is the function's result), set at
 * start (`--lambda <arn>=<url>`) or at run time (`PUT /_emulator/lambdas`). A later kind of
 * target (a handler module) only needs another `LambdaFunction` factory.
 *
 * `HookRunner.run` invokes a template's hook with AWS's request payload under a 5-second
 * budget and turns every answer into allow (with parameterOverrides) or deny (with a reason a
 * person can act on). Anything but `"allowProvisioning": true` (the JSON boolean) denies.
 */
import { Agent, request, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';

/** AWS's hook request payload (aws-iot.md §4.5). */
export interface HookEvent {
  claimCertificateId: string;
  certificateId: string;
  certificatePem: string;
  templateArn: string;
  clientId: string;
  parameters: Record<string, string>;
}

export type HookOutcome =
  | { allowed: true; parameterOverrides: Record<string, string>; answer: unknown }
  | { allowed: false; reason: string; answer?: unknown };

export interface LambdaFunction {
  /** Resolves with the function's (parsed JSON) result; rejects with why it failed. */
  invoke(event: unknown, signal: AbortSignal): Promise<unknown>;
}

/** Where the stand-in sends an invocation of one function ARN. */
export interface LambdaTarget {
  kind: 'http';
  url: string;
}

export const LAMBDA_ARN =
  /^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]{1,64}(:[A-Za-z0-9_$-]+)?$/;
const MAX_ANSWER_BYTES = 256 * 1024;

export class LambdaConfigError extends Error {}

/** Checks one `<arn>` → `<url>` mapping; throws LambdaConfigError with what would be valid. */
export function checkMapping(arn: string, url: unknown): LambdaTarget {
  if (!LAMBDA_ARN.test(arn))
    throw new LambdaConfigError(
      `"${arn}" is not a Lambda function ARN (arn:aws:lambda:<region>:<12-digit account>:function:<name>[:<qualifier>])`,
    );
  if (typeof url !== 'string')
    throw new LambdaConfigError(`the endpoint of ${arn} must be a string URL, got ${JSON.stringify(url)}`);
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new LambdaConfigError(
      `the endpoint of ${arn} is not a URL: "${url}" (e.g. http://127.0.0.1:9000/hook)`,
    );
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw new LambdaConfigError(`the endpoint of ${arn} must be http:// or https://, got "${url}"`);
  return { kind: 'http', url };
}

/** Parses `--lambda <arn>=<url>` (split at the first `=`: ARNs hold none). */
export function parseLambdaOption(value: string): [arn: string, target: LambdaTarget] {
  const i = value.indexOf('=');
  if (i <= 0) throw new LambdaConfigError(`--lambda takes <function arn>=<url>, got "${value}"`);
  const arn = value.slice(0, i);
  return [arn, checkMapping(arn, value.slice(i + 1))];
}

/** A function behind an HTTP endpoint: POST the event as JSON, a 2xx JSON body is the result. */
export function httpFunction(url: string): LambdaFunction {
  const u = new URL(url);
  const send = u.protocol === 'https:' ? httpsRequest : request;
  // One keep-alive pool per function, so hooks cost a request and not a connection.
  const agent =
    u.protocol === 'https:'
      ? new HttpsAgent({ keepAlive: true, maxSockets: 64 })
      : new Agent({ keepAlive: true, maxSockets: 64 });
  return {
    invoke: (event, signal) =>
      new Promise((resolve, reject) => {
        const body = Buffer.from(JSON.stringify(event));
        const req = send(
          u,
          {
            method: 'POST',
            agent,
            signal,
            headers: { 'content-type': 'application/json', 'content-length': body.length },
          },
          (res: IncomingMessage) => {
            const chunks: Buffer[] = [];
            let size = 0;
            res.on('data', (c: Buffer) => {
              size += c.length;
              if (size > MAX_ANSWER_BYTES) {
                res.destroy();
                reject(new Error(`the function's answer is larger than ${MAX_ANSWER_BYTES} bytes`));
              } else chunks.push(c);
            });
            res.on('error', reject);
            res.on('end', () => {
              const text = Buffer.concat(chunks).toString('utf8');
              const status = res.statusCode ?? 0;
              if (status < 200 || status > 299)
                return reject(new Error(`the function failed: HTTP ${status} ${text.slice(0, 200)}`.trim()));
              try {
                resolve(JSON.parse(text) as unknown);
              } catch {
                reject(new Error(`the function's answer is not JSON: ${JSON.stringify(text.slice(0, 200))}`));
              }
            });
          },
        );
        req.on('error', (e: NodeJS.ErrnoException) =>
          reject(
            new Error(
              signal.aborted
                ? 'the function did not answer in time'
                : `the function could not be reached at ${url}: ${e.code ?? e.message}`,
            ),
          ),
        );
        req.end(body);
      }),
  };
}

/** The ARN → function map (start-up `--lambda` options and `PUT /_emulator/lambdas`). */
export class Lambdas {
  private readonly targets = new Map<string, LambdaTarget>();
  private readonly functions = new Map<string, LambdaFunction>();

  constructor(initial: Iterable<[string, LambdaTarget]> = []) {
    for (const [arn, t] of initial) this.set(arn, t);
  }

  set(arn: string, target: LambdaTarget): void {
    this.targets.set(arn, target);
    this.functions.set(arn, httpFunction(target.url));
  }

  delete(arn: string): boolean {
    this.functions.delete(arn);
    return this.targets.delete(arn);
  }

  clear(): void {
    this.targets.clear();
    this.functions.clear();
  }

  get(arn: string): LambdaFunction | undefined {
    return this.functions.get(arn);
  }

  /** `{ "<arn>": "<url>" }`, the shape of `GET/PUT /_emulator/lambdas`. */
  toJSON(): Record<string, string> {
    return Object.fromEntries([...this.targets].map(([arn, t]) => [arn, t.url]));
  }

  /**
   * Applies a `PUT /_emulator/lambdas` body: `{ "<arn>": "<url>" | null }` (null removes);
   * `replace` drops every mapping not in the body. All entries are checked before any is applied.
   */
  update(body: unknown, replace = false): Record<string, string> {
    if (typeof body !== 'object' || body === null || Array.isArray(body))
      throw new LambdaConfigError(
        'the body must be a JSON object of "<function arn>": "<url>" (or null to remove)',
      );
    const entries = Object.entries(body as Record<string, unknown>).map(
      ([arn, url]) => [arn, url === null ? null : checkMapping(arn, url)] as const,
    );
    if (replace) this.clear();
    for (const [arn, t] of entries) {
      if (t) this.set(arn, t);
      else this.delete(arn);
    }
    return this.toJSON();
  }
}

/** A `preProvisioningHook` of a template. */
export interface HookConfig {
  targetArn: string;
  payloadVersion?: string;
}

export interface HookRunnerOptions {
  /** AWS's hard limit is 5 seconds (aws-iot.md §4.5). */
  budgetMs?: number;
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

export class HookRunner {
  readonly budgetMs: number;

  constructor(
    readonly lambdas: Lambdas,
    options: HookRunnerOptions = {},
  ) {
    this.budgetMs = options.budgetMs ?? 5000;
  }

  /** Invokes the hook; never throws. */
  async run(hook: HookConfig, event: HookEvent): Promise<HookOutcome> {
    const fn = this.lambdas.get(hook.targetArn);
    if (!fn)
      return {
        allowed: false,
        reason: `no local endpoint is mapped to the hook's Lambda ${hook.targetArn}; map one with --lambda ${hook.targetArn}=<url> or PUT /_emulator/lambdas`,
      };
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.budgetMs);
    let answer: unknown;
    try {
      answer = await fn.invoke(event, controller.signal);
    } catch (e) {
      const timedOut = controller.signal.aborted;
      return {
        allowed: false,
        reason: timedOut
          ? `the hook ${hook.targetArn} did not answer within ${this.budgetMs} ms`
          : `the hook ${hook.targetArn} failed: ${(e as Error).message}`,
      };
    } finally {
      clearTimeout(timer);
    }
    return judge(hook.targetArn, answer);
  }
}

/** Turns a hook's answer into allow or deny (pure; exported for unit tests). */
export function judge(arn: string, answer: unknown): HookOutcome {
  if (!isObject(answer))
    return { allowed: false, answer, reason: `the hook ${arn} answered ${short(answer)}, not a JSON object` };
  const allow = answer.allowProvisioning;
  if (allow !== true)
    return {
      allowed: false,
      answer,
      reason:
        allow === undefined
          ? `the hook ${arn} answered without "allowProvisioning"`
          : typeof allow === 'boolean'
            ? `the hook ${arn} answered "allowProvisioning": false`
            : `the hook ${arn} answered "allowProvisioning": ${short(allow)}; only the JSON boolean true allows provisioning`,
    };
  const overrides = answer.parameterOverrides;
  if (overrides === undefined || overrides === null) return { allowed: true, parameterOverrides: {}, answer };
  if (!isObject(overrides))
    return {
      allowed: false,
      answer,
      reason: `the hook ${arn} allowed provisioning but "parameterOverrides" is ${short(overrides)}, not an object of strings`,
    };
  for (const [k, v] of Object.entries(overrides))
    if (typeof v !== 'string')
      return {
        allowed: false,
        answer,
        reason: `the hook ${arn} allowed provisioning but parameterOverrides.${k} is ${short(v)}, not a string`,
      };
  return { allowed: true, parameterOverrides: overrides as Record<string, string>, answer };
}

function short(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}
