/**
 * provline's pre-provisioning hook as a Lambda handler (docs/claim.md "The hook"):
 *
 *   handler name  handler.handler  (this module's `handler` export; ES module)
 *   environment   PROVLINE_HOOK_BUCKET       the bucket provline publishes allow-lists to
 *                 PROVLINE_HOOK_PREFIX       key prefix (default provline/claims)
 *                 PROVLINE_HOOK_PUBLIC_KEYS  the allow-list signing public key(s), PEM
 *                 PROVLINE_HOOK_REFRESH_MS   how old the cached lots may get (default 30000)
 *                 PROVLINE_HOOK_LEASE_MS     how long an allowed, still pending certificate
 *                                            holds its serial (default 15000)
 *                 PROVLINE_HOOK_S3_ENDPOINT  an S3 endpoint other than AWS's (path-style)
 *                 PROVLINE_HOOK_IOT_ENDPOINT an AWS IoT endpoint other than AWS's
 *   permissions   s3:ListBucket on the prefix, s3:GetObject on lots/ and used/,
 *                 s3:PutObject on used/ and denied/, iot:DescribeCertificate
 *
 * For each RegisterThing AWS IoT calls it with the request; it answers within a budget well
 * inside AWS's 5 seconds: allow with the lot row's parameters as parameterOverrides, or deny.
 * It allows a serial only if a lot allow-list signed by a trusted key lists it for this
 * template (and, when the lot names a lot parameter, only to a device that says it is of that
 * lot), and only once: the allow is a conditional write of `used/<serial>.json`
 * (If-None-Match: *), so of two requests for one serial exactly one wins, on any number of
 * concurrent instances. A serial whose RegisterThing did not complete after the allow (its
 * certificate is still pending after the lease, or gone) may be taken over by a retry, with a
 * write conditional on the marker's ETag; a completed one is a replay (decide.ts markerRule). Every denial is written to `denied/<serial>/…` with its reason, which
 * `provline claim status`, `report` and `reconcile` read. Lots are cached per instance and
 * re-listed when older than the refresh time, or when a serial is not found (a lot may have
 * been published since), at most every 250 ms.
 */
import { randomBytes, type KeyObject } from 'node:crypto';
import { DescribeCertificateCommand, IoTClient } from '@aws-sdk/client-iot';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import {
  AllowListError,
  hookKeys,
  openAllowList,
  publicKeysFromPem,
  type AllowedDevice,
  type AllowList,
} from './allow-list.js';
import {
  answerOf,
  judge,
  markerRule,
  readRequest,
  type HookRequest,
  type LotIndex,
  type UsedMarker,
  type Verdict,
} from './decide.js';

export interface HookDeps {
  s3: S3Client;
  bucket: string;
  prefix: string;
  trusted: ReadonlyMap<string, KeyObject>;
  /** Re-list a template's lots when the cache is older than this (ms). */
  refreshMs?: number;
  /** The hook's own budget per request (ms); AWS allows 5000. Default 4000. */
  budgetMs?: number;
  /**
   * A certificate's status in AWS IoT (undefined when it does not exist): how the hook tells a
   * completed provisioning from one whose RegisterThing failed after the hook allowed it.
   * Without it every marked serial is a replay.
   */
  certificateStatus?: (certificateId: string, signal: AbortSignal) => Promise<string | undefined>;
  /** How long an allowed but still pending certificate holds its serial (ms, default 15000). */
  leaseMs?: number;
  now?: () => number;
  log?: (line: string) => void;
}

/** The part of Lambda's context object the hook reads. */
export interface LambdaContext {
  getRemainingTimeInMillis?: () => number;
}

export type HookHandler = (event: unknown, context?: LambdaContext) => Promise<Record<string, unknown>>;

const MISS_REFRESH_MS = 250;
const DEFAULT_LEASE_MS = 15_000;

class Lots implements LotIndex {
  private readonly objects = new Map<string, { etag: string; list: AllowList }>();
  private bySerial = new Map<string, Array<{ list: AllowList; device: AllowedDevice }>>();
  loadedAt = -Infinity;
  private loading: Promise<void> | undefined;

  constructor(
    private readonly deps: HookDeps,
    private readonly template: string,
  ) {}

  find(serial: string): Array<{ list: AllowList; device: AllowedDevice }> {
    return this.bySerial.get(serial) ?? [];
  }

  serialParameter(): string | undefined {
    for (const o of this.objects.values()) return o.list.serialParameter;
    return undefined;
  }

  /** Re-lists the lots; concurrent callers share one refresh. */
  refresh(signal: AbortSignal): Promise<void> {
    this.loading ??= this.load(signal).finally(() => (this.loading = undefined));
    return this.loading;
  }

  private async load(signal: AbortSignal): Promise<void> {
    const { s3, bucket, prefix } = this.deps;
    const seen = new Set<string>();
    let token: string | undefined;
    do {
      const page = await s3.send(
        new ListObjectsV2Command({
          Bucket: bucket,
          Prefix: hookKeys.lots(prefix, this.template),
          ...(token ? { ContinuationToken: token } : {}),
        }),
        { abortSignal: signal },
      );
      for (const o of page.Contents ?? []) {
        if (!o.Key?.endsWith('.json')) continue;
        seen.add(o.Key);
        const etag = o.ETag ?? '';
        if (this.objects.get(o.Key)?.etag === etag) continue;
        const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: o.Key }), {
          abortSignal: signal,
        });
        const text = (await got.Body?.transformToString('utf8')) ?? '';
        try {
          const list = openAllowList(text, this.deps.trusted);
          if (list.templateName !== this.template)
            throw new AllowListError(`it is for template ${list.templateName}, not ${this.template}`);
          this.objects.set(o.Key, { etag, list });
        } catch (e) {
          if (!(e instanceof AllowListError)) throw e;
          this.objects.delete(o.Key);
          this.deps.log?.(`ignoring allow-list ${o.Key}: ${e.message}`);
        }
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    for (const k of [...this.objects.keys()]) if (!seen.has(k)) this.objects.delete(k);
    // Oldest lot first: a serial listed in two lots (with the same row) is found in both.
    const lists = [...this.objects.values()]
      .map((o) => o.list)
      .sort((a, b) => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : 0));
    const bySerial = new Map<string, Array<{ list: AllowList; device: AllowedDevice }>>();
    for (const list of lists)
      for (const [serial, device] of Object.entries(list.devices)) {
        const hits = bySerial.get(serial);
        if (hits) hits.push({ list, device });
        else bySerial.set(serial, [{ list, device }]);
      }
    this.bySerial = bySerial;
    this.loadedAt = (this.deps.now ?? Date.now)();
  }
}

const errorName = (e: unknown): string => (e as { name?: string })?.name ?? '';
const statusOf = (e: unknown): number | undefined =>
  (e as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;

/** A handler over explicit dependencies (the local runner and tests use this one). */
export function makeHandler(deps: HookDeps): HookHandler {
  const now = deps.now ?? Date.now;
  const refreshMs = deps.refreshMs ?? 30_000;
  const leaseMs = deps.leaseMs ?? DEFAULT_LEASE_MS;
  const templates = new Map<string, Lots>();
  const lotsOf = (t: string): Lots => {
    let l = templates.get(t);
    if (!l) templates.set(t, (l = new Lots(deps, t)));
    return l;
  };

  async function decide(event: unknown, signal: AbortSignal): Promise<Verdict> {
    const read = readRequest(event);
    if (typeof read === 'string')
      return { allow: false, denial: 'BAD_REQUEST', reason: read, serial: '', templateName: '' };
    const { request, templateName } = read;
    const lots = lotsOf(templateName);
    if (now() - lots.loadedAt > refreshMs) await lots.refresh(signal);
    const param = lots.serialParameter() ?? 'SerialNumber';
    let v = judge(request, templateName, lots, param);
    if (!v.allow && v.denial === 'NOT_IN_LOT' && now() - lots.loadedAt > MISS_REFRESH_MS) {
      await lots.refresh(signal);
      v = judge(request, templateName, lots, lots.serialParameter() ?? param);
    }
    if (!v.allow) return v;
    return once(v, request, signal);
  }

  /**
   * Once only, for provisioned devices: the first conditional write of used/<serial> wins; a
   * later request for a marked serial is judged by `markerRule` (the earlier certificate's
   * status in AWS IoT tells whether its RegisterThing completed). Taking over an abandoned
   * serial is a write conditional on the marker's ETag, so of many retries exactly one wins.
   */
  async function once(
    v: Extract<Verdict, { allow: true }>,
    request: HookRequest,
    signal: AbortSignal,
  ): Promise<Verdict> {
    const usedKey = hookKeys.used(deps.prefix, v.templateName, v.serial);
    const body = JSON.stringify({
      serial: v.serial,
      batchId: v.batchId,
      thingName: v.device.thingName,
      certificateId: request.certificateId,
      claimCertificateId: request.claimCertificateId,
      clientId: request.clientId,
      at: new Date(now()).toISOString(),
    });
    const deny = (denial: 'REPLAY' | 'IN_PROGRESS', reason: string): Verdict => ({
      allow: false,
      denial,
      reason,
      serial: v.serial,
      templateName: v.templateName,
    });
    if (await putMarker(deps, usedKey, body, { IfNoneMatch: '*' }, signal)) return v;
    const before = await readMarker(deps, usedKey, signal);
    if (!before) return deny('IN_PROGRESS', `serial ${v.serial} is being marked by another request; retry`);
    const { marker, etag } = before;
    const status =
      marker.certificateId === request.certificateId || !deps.certificateStatus
        ? 'ACTIVE'
        : await deps.certificateStatus(marker.certificateId, signal);
    const rule = markerRule(marker, request.certificateId, status, now(), leaseMs);
    const earlier = `certificate ${marker.certificateId} at ${marker.at}`;
    switch (rule) {
      case 'same-certificate':
        return v;
      case 'completed':
        return deny(
          'REPLAY',
          `serial ${v.serial} was already provisioned (${earlier}, now ${status ?? 'gone'}); each serial provisions once`,
        );
      case 'in-progress':
        return deny(
          'IN_PROGRESS',
          `serial ${v.serial} was allowed ${Math.max(0, Math.round((now() - Date.parse(marker.at)) / 1000))} s ago for ${earlier}, whose RegisterThing may still be running; retry after ${Math.ceil(leaseMs / 1000)} s`,
        );
      case 'abandoned':
        if (await putMarker(deps, usedKey, body, { IfMatch: etag }, signal)) return v;
        return deny('IN_PROGRESS', `another request took serial ${v.serial} over at the same time; retry`);
    }
  }

  return async (event, context) => {
    const remaining = context?.getRemainingTimeInMillis?.() ?? Infinity;
    const budget = Math.max(100, Math.min(deps.budgetMs ?? 4000, remaining - 500));
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), budget);
    let v: Verdict;
    try {
      v = await decide(event, controller.signal);
    } catch (e) {
      const serialGuess = guessSerial(event);
      v = controller.signal.aborted
        ? {
            allow: false,
            denial: 'OUT_OF_TIME',
            reason: `the hook ran out of its ${budget} ms budget reading the allow-list store`,
            ...serialGuess,
          }
        : {
            allow: false,
            denial: 'STORE_FAILED',
            reason: `the allow-list store failed: ${errorName(e) || (e as Error).message}`,
            ...serialGuess,
          };
    } finally {
      clearTimeout(timer);
    }
    if (!v.allow)
      await recordDenial(deps, v, event, now()).catch((e: unknown) =>
        deps.log?.(`could not record a denial: ${(e as Error).message}`),
      );
    return answerOf(v);
  };
}

function guessSerial(event: unknown): { serial: string; templateName: string } {
  const read = readRequest(event);
  if (typeof read === 'string') return { serial: '', templateName: '' };
  return { serial: read.request.parameters.SerialNumber ?? '', templateName: read.templateName };
}

/** A conditional write of a marker; false when its condition did not hold (412, or 404 on If-Match). */
async function putMarker(
  deps: HookDeps,
  key: string,
  body: string,
  condition: { IfNoneMatch: string } | { IfMatch: string },
  signal: AbortSignal,
): Promise<boolean> {
  try {
    await deps.s3.send(
      new PutObjectCommand({
        Bucket: deps.bucket,
        Key: key,
        Body: body,
        ContentType: 'application/json',
        ...condition,
      }),
      { abortSignal: signal },
    );
    return true;
  } catch (e) {
    const status = statusOf(e);
    if (status === 412 || errorName(e) === 'PreconditionFailed') return false;
    if ('IfMatch' in condition && (status === 404 || errorName(e) === 'NoSuchKey')) return false;
    throw e;
  }
}

/** The marker of a serial with its ETag, or undefined when there is none. */
async function readMarker(
  deps: HookDeps,
  key: string,
  signal: AbortSignal,
): Promise<{ marker: UsedMarker; etag: string } | undefined> {
  try {
    const got = await deps.s3.send(new GetObjectCommand({ Bucket: deps.bucket, Key: key }), {
      abortSignal: signal,
    });
    const r = JSON.parse((await got.Body?.transformToString('utf8')) ?? '') as Partial<UsedMarker>;
    return {
      marker: { certificateId: String(r.certificateId ?? ''), at: String(r.at ?? '') },
      etag: got.ETag ?? '',
    };
  } catch (e) {
    if (statusOf(e) === 404 || errorName(e) === 'NoSuchKey') return undefined;
    throw e;
  }
}

/** `certificateStatus` over AWS IoT's DescribeCertificate (iot:DescribeCertificate). */
export function iotCertificateStatus(
  iot: IoTClient,
): (certificateId: string, signal: AbortSignal) => Promise<string | undefined> {
  return async (certificateId, signal) => {
    try {
      const r = await iot.send(new DescribeCertificateCommand({ certificateId }), { abortSignal: signal });
      return r.certificateDescription?.status ?? 'UNKNOWN';
    } catch (e) {
      if (errorName(e) === 'ResourceNotFoundException' || statusOf(e) === 404) return undefined;
      throw e;
    }
  };
}

async function recordDenial(
  deps: HookDeps,
  v: Extract<Verdict, { allow: false }>,
  event: unknown,
  at: number,
): Promise<void> {
  if (!v.templateName) {
    deps.log?.(`denied a request that names no template: ${v.reason}`);
    return;
  }
  const read = readRequest(event);
  const request = typeof read === 'string' ? undefined : read.request;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 500);
  try {
    await deps.s3.send(
      new PutObjectCommand({
        Bucket: deps.bucket,
        Key: hookKeys.denied(deps.prefix, v.templateName, v.serial, at, randomBytes(4).toString('hex')),
        Body: JSON.stringify({
          serial: v.serial,
          code: v.denial,
          reason: v.reason,
          certificateId: request?.certificateId,
          claimCertificateId: request?.claimCertificateId,
          clientId: request?.clientId,
          at: new Date(at).toISOString(),
        }),
        ContentType: 'application/json',
      }),
      { abortSignal: controller.signal },
    );
  } finally {
    clearTimeout(timer);
  }
}

/** Dependencies from the Lambda environment (see the header). */
export function depsFromEnv(env: NodeJS.ProcessEnv = process.env): HookDeps {
  const bucket = env.PROVLINE_HOOK_BUCKET;
  const keys = env.PROVLINE_HOOK_PUBLIC_KEYS;
  if (!bucket)
    throw new Error('PROVLINE_HOOK_BUCKET is not set: the bucket provline publishes allow-lists to');
  if (!keys)
    throw new Error('PROVLINE_HOOK_PUBLIC_KEYS is not set: the PEM public key(s) that sign allow-lists');
  const trusted = publicKeysFromPem(keys.replace(/\\n/g, '\n'));
  if (!trusted.size) throw new Error('PROVLINE_HOOK_PUBLIC_KEYS holds no PEM public key');
  const endpoint = env.PROVLINE_HOOK_S3_ENDPOINT;
  const iotEndpoint = env.PROVLINE_HOOK_IOT_ENDPOINT;
  return {
    s3: new S3Client({
      ...(endpoint ? { endpoint, forcePathStyle: true } : {}),
      maxAttempts: 2,
      requestChecksumCalculation: 'WHEN_REQUIRED',
    }),
    certificateStatus: iotCertificateStatus(
      new IoTClient({ ...(iotEndpoint ? { endpoint: iotEndpoint } : {}), maxAttempts: 2 }),
    ),
    bucket,
    prefix: env.PROVLINE_HOOK_PREFIX ?? 'provline/claims',
    trusted,
    ...(env.PROVLINE_HOOK_REFRESH_MS ? { refreshMs: Number(env.PROVLINE_HOOK_REFRESH_MS) } : {}),
    ...leaseFromEnv(env),
    log: (line) => console.log(line),
  };
}

/** `leaseMs` from PROVLINE_HOOK_LEASE_MS (a whole number of ms ≥ 0), when set. */
export function leaseFromEnv(env: NodeJS.ProcessEnv): { leaseMs?: number } {
  const text = env.PROVLINE_HOOK_LEASE_MS;
  if (text === undefined || text === '') return {};
  const ms = Number(text);
  if (!Number.isInteger(ms) || ms < 0)
    throw new Error(
      `PROVLINE_HOOK_LEASE_MS must be a whole number of milliseconds ≥ 0, got ${JSON.stringify(text)}`,
    );
  return { leaseMs: ms };
}

let fromEnv: HookHandler | undefined;

/** The Lambda entry point. */
export const handler: HookHandler = (event, context) => {
  fromEnv ??= makeHandler(depsFromEnv());
  return fromEnv(event, context);
};
