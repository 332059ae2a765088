/**
 * The fleet-provisioning MQTT API (aws-iot.md §4.1, aws-iot-dataplane.md §2.2): a
 * ReservedService the broker routes these publishes to, after it checked iot:Publish:
 *
 *   $aws/certificates/create/<fmt>                          CreateKeysAndCertificate
 *   $aws/certificates/create-from-csr/<fmt>                 CreateCertificateFromCsr
 *   $aws/provisioning-templates/<name>/provision/<fmt>      RegisterThing
 *
 * `<fmt>` is `json` or `cbor`; the answer goes to `<topic>/accepted` or `<topic>/rejected` in
 * the same format. New certificates wait PENDING_ACTIVATION with a certificateOwnershipToken:
 * a random opaque string, of which only the SHA-256 is stored (C.fleetTokens, in the WAL
 * store, so tokens survive a restart and a copy of the state directory cannot be replayed).
 * A token is single-use, bound to its certificate and valid for one hour of `ctx.now()`;
 * after that the certificate, if still unused (PENDING_ACTIVATION, no thing, no policy), is
 * deleted. RegisterThing runs the template's pre-provisioning hook (hooks.ts), then the
 * template through the shared evaluator (`provisionWithTemplate`). Every success and every
 * rejection goes to the reasons log as `fleet.*` with a reason a person can act on; a request
 * is answered, never thrown (docs/emulator.md "Fleet provisioning" lists the error codes).
 */
import { createHash, randomBytes } from 'node:crypto';
import { decode as cborDecode, encode as cborEncode } from 'cborg';
import { IotError } from '../errors.js';
import { issueFromCsr, storeIssued } from '../iot/certs.js';
import { C, R, type CertRec, type Ctx, type FleetTokenRec, type TemplateRec } from '../iot/model.js';
import { provisionWithTemplate, type Provisioned } from '../iot/register.js';
import { rsaKeyPair } from '../pki.js';
import type { RecordEvent, ReservedService, ServiceReply, ServiceRequest } from './contract.js';
import type { HookRunner } from './hooks.js';

export type PayloadFormat = 'json' | 'cbor';
export type FleetApi = 'CreateKeysAndCertificate' | 'CreateCertificateFromCsr' | 'RegisterThing';

export interface FleetTopic {
  api: FleetApi;
  format: PayloadFormat;
  templateName?: string;
}

/** AWS's message size limit (128 KiB); a larger request is rejected, not parsed. */
export const MAX_FLEET_PAYLOAD = 128 * 1024;
/** certificateOwnershipToken lifetime (aws-iot.md §4.1). */
export const TOKEN_TTL_SECONDS = 3600;
/** How long a used or expired token is remembered, so a replay is told why it fails. */
const TOKEN_MEMORY_SECONDS = 24 * 3600;

const CREATE = /^\$aws\/certificates\/create\/(json|cbor)$/;
const CREATE_FROM_CSR = /^\$aws\/certificates\/create-from-csr\/(json|cbor)$/;
const PROVISION = /^\$aws\/provisioning-templates\/([^/#+]+)\/provision\/(json|cbor)$/;

/** The API a request topic names, or undefined when it is not a fleet request topic. */
export function parseFleetTopic(topic: string): FleetTopic | undefined {
  let m = CREATE.exec(topic);
  if (m) return { api: 'CreateKeysAndCertificate', format: m[1] as PayloadFormat };
  m = CREATE_FROM_CSR.exec(topic);
  if (m) return { api: 'CreateCertificateFromCsr', format: m[1] as PayloadFormat };
  m = PROVISION.exec(topic);
  if (m) return { api: 'RegisterThing', format: m[2] as PayloadFormat, templateName: m[1]! };
  return undefined;
}

/** A `/rejected` answer: AWS's three fields, plus the log's reason and details. */
class Rejection extends Error {
  constructor(
    readonly statusCode: number,
    readonly errorCode: string,
    readonly errorMessage: string,
    readonly reason: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(errorMessage);
  }
}

const badPayload = (message: string, reason = message): Rejection =>
  new Rejection(400, 'InvalidPayload', message, reason);
const badToken = (message: string, reason: string, details: Record<string, unknown> = {}): Rejection =>
  new Rejection(400, 'InvalidCertificateOwnershipToken', message, reason, details);

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);

/** Decodes a request payload (an empty payload is `{}`); throws a Rejection. */
export function decodePayload(payload: Buffer, format: PayloadFormat): Record<string, unknown> {
  if (payload.length > MAX_FLEET_PAYLOAD)
    throw badPayload(
      `The payload is ${payload.length} bytes; the limit is ${MAX_FLEET_PAYLOAD}.`,
      `request payload of ${payload.length} bytes is over the ${MAX_FLEET_PAYLOAD}-byte message limit`,
    );
  if (payload.length === 0) return {};
  let value: unknown;
  try {
    value =
      format === 'json'
        ? (JSON.parse(payload.toString('utf8')) as unknown)
        : (cborDecode(payload) as unknown);
  } catch (e) {
    throw badPayload(
      `The payload is not valid ${format.toUpperCase()}.`,
      `request payload is not valid ${format.toUpperCase()} (${(e as Error).message}); the topic's /${format} suffix decides the encoding`,
    );
  }
  if (!isObject(value))
    throw badPayload(
      `The payload must be a ${format.toUpperCase()} object.`,
      `request payload is ${format.toUpperCase()} ${Array.isArray(value) ? 'array' : typeof value}, not an object`,
    );
  return value;
}

export function encodePayload(value: Record<string, unknown>, format: PayloadFormat): Buffer {
  const clean = Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined));
  return format === 'json' ? Buffer.from(JSON.stringify(clean)) : Buffer.from(cborEncode(clean));
}

const hashToken = (token: string): string => createHash('sha256').update(token).digest('hex');

function describeType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Uint8Array) return 'a byte string';
  return `a ${typeof v}`;
}

/** RegisterThing `parameters`: absent, or an object of string → string. */
function readParameters(body: Record<string, unknown>): Record<string, string> {
  const p = body.parameters;
  if (p === undefined || p === null) return {};
  if (!isObject(p))
    throw badPayload(
      'parameters must be an object of string values.',
      `RegisterThing parameters is ${describeType(p)}; it must map parameter names to strings`,
    );
  for (const [k, v] of Object.entries(p)) {
    if (typeof v !== 'string')
      throw badPayload(
        `parameters.${k} must be a string.`,
        `RegisterThing parameters.${k} is ${describeType(v)}; every parameter value must be a string (e.g. "${k}": "${String(v)}")`,
      );
    if (k.length > 2048 || v.length > 4096)
      throw badPayload(
        `parameters.${k} is too long.`,
        `RegisterThing parameters.${k}: keys may have 2048 characters and values 4096`,
      );
  }
  return p as Record<string, string>;
}

export interface FleetDeps {
  record: RecordEvent;
  hooks: HookRunner;
  /** Whether this request of `api` is throttled (the stand-in's faults); default never. */
  throttled?: (api: FleetApi) => boolean;
  /** Sweep expired tokens this often (default 10 s; 0 = only when requests arrive). */
  sweepIntervalMs?: number;
}

export interface FleetService extends ReservedService {
  /** Expires due tokens (deleting their unused certificates); returns how many it handled. */
  sweep(): number;
  /** Stops the sweep timer. */
  close(): void;
}

export function fleetService(ctx: Ctx, deps: FleetDeps): FleetService {
  const { store } = ctx;
  const { record } = deps;
  /** Token hashes with the time their next sweep action is due, sorted by that time. */
  const due: Array<{ at: number; key: string }> = [];
  /** Token hashes whose RegisterThing is running (waiting for a hook). */
  const inFlight = new Set<string>();

  const schedule = (key: string, at: number): void => {
    let lo = 0;
    let hi = due.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (due[mid]!.at <= at) lo = mid + 1;
      else hi = mid;
    }
    due.splice(lo, 0, { at, key });
  };
  const forgetAt = (rec: FleetTokenRec): number => rec.expiresAt + TOKEN_MEMORY_SECONDS;
  for (const rec of store.values<FleetTokenRec>(C.fleetTokens))
    schedule(rec.tokenHash, rec.usedAt !== undefined || rec.expired ? forgetAt(rec) : rec.expiresAt);

  /** Marks a token expired and deletes its certificate if still unused, as AWS does. */
  function expire(rec: FleetTokenRec): void {
    const cert = store.get<CertRec>(C.certs, rec.certificateId);
    const attached =
      cert !== undefined &&
      (store.countLeftOf(R.thingPrincipal, cert.certificateArn) > 0 ||
        store.countLeftOf(R.policyTarget, cert.certificateArn) > 0);
    const deletable = cert?.status === 'PENDING_ACTIVATION' && !attached;
    store.transaction(() => {
      if (deletable) store.del(C.certs, rec.certificateId);
      store.put(C.fleetTokens, rec.tokenHash, { ...rec, expired: true });
    });
    record({
      kind: 'fleet.expired',
      clientId: rec.clientId,
      certificateId: rec.certificateId,
      reason: deletable
        ? `the certificateOwnershipToken of certificate ${rec.certificateId} expired unused (${TOKEN_TTL_SECONDS} s after issue); the PENDING_ACTIVATION certificate was deleted`
        : `the certificateOwnershipToken of certificate ${rec.certificateId} expired unused; the certificate was kept (${cert ? `status ${cert.status}${attached ? ', attached' : ''}` : 'already deleted'})`,
    });
  }

  function sweep(): number {
    const now = ctx.now();
    let handled = 0;
    while (due.length && due[0]!.at <= now) {
      const { key } = due.shift()!;
      const rec = store.get<FleetTokenRec>(C.fleetTokens, key);
      if (!rec) continue;
      if (inFlight.has(key)) {
        schedule(key, now + 1);
        continue;
      }
      handled++;
      if (now >= forgetAt(rec)) {
        store.del(C.fleetTokens, key);
        continue;
      }
      if (rec.usedAt === undefined && !rec.expired) expire(rec);
      schedule(key, forgetAt(rec));
    }
    return handled;
  }

  const interval = deps.sweepIntervalMs ?? 10_000;
  const timer = interval > 0 ? setInterval(() => sweep(), interval) : undefined;
  timer?.unref();

  /** Mints a token for a certificate created on `req`'s connection (inside the caller's transaction). */
  function mintToken(req: ServiceRequest, cert: CertRec, what: string, how: string): string {
    const token = randomBytes(48).toString('base64url');
    const now = ctx.now();
    const key = hashToken(token);
    const rec: FleetTokenRec = {
      tokenHash: key,
      certificateId: cert.certificateId,
      issuedAt: now,
      expiresAt: now + TOKEN_TTL_SECONDS,
      claimCertificateId: req.connection.certificateId,
      clientId: req.connection.clientId,
    };
    store.put(C.fleetTokens, key, rec);
    schedule(key, rec.expiresAt);
    record({
      kind: 'fleet.created',
      clientId: req.connection.clientId,
      certificateId: cert.certificateId,
      topic: req.topic,
      reason: `${what} certificate ${cert.certificateId} ${how} for claim certificate ${req.connection.certificateId}; RegisterThing must use its token within ${TOKEN_TTL_SECONDS} s`,
    });
    return token;
  }

  function createKeys(req: ServiceRequest): Record<string, unknown> {
    const keys = rsaKeyPair();
    return store.transaction(() => {
      const cert = storeIssued(
        ctx,
        ctx.ca.issue(keys.spki, new Date(ctx.now() * 1000)),
        'PENDING_ACTIVATION',
      );
      const token = mintToken(req, cert, 'CreateKeysAndCertificate issued', '(RSA-2048, PENDING_ACTIVATION)');
      return {
        certificateId: cert.certificateId,
        certificatePem: cert.certificatePem,
        privateKey: keys.privatePem,
        certificateOwnershipToken: token,
      };
    });
  }

  function createFromCsr(req: ServiceRequest, body: Record<string, unknown>): Record<string, unknown> {
    const csr = body.certificateSigningRequest;
    if (csr === undefined || csr === null || csr === '')
      throw new Rejection(
        400,
        'InvalidCertificateSigningRequest',
        'Certificate signing request cannot be empty.',
        'CreateCertificateFromCsr payload has no certificateSigningRequest (a PEM "CERTIFICATE REQUEST")',
      );
    if (typeof csr !== 'string')
      throw badPayload(
        'certificateSigningRequest must be a string.',
        `CreateCertificateFromCsr certificateSigningRequest is ${describeType(csr)}, not a PEM string`,
      );
    return store.transaction(() => {
      let cert: CertRec;
      try {
        cert = issueFromCsr(ctx, csr, 'PENDING_ACTIVATION');
      } catch (e) {
        if (!(e instanceof IotError)) throw e;
        throw new Rejection(
          400,
          'InvalidCertificateSigningRequest',
          e.message,
          `CreateCertificateFromCsr refused the CSR: ${e.message}`,
        );
      }
      const token = mintToken(
        req,
        cert,
        'CreateCertificateFromCsr issued',
        "for the CSR's key (PENDING_ACTIVATION)",
      );
      return {
        certificateOwnershipToken: token,
        certificateId: cert.certificateId,
        certificatePem: cert.certificatePem,
      };
    });
  }

  /** The template RegisterThing may use, or a Rejection saying why not. */
  function usableTemplate(name: string): TemplateRec {
    const t = store.get<TemplateRec>(C.templates, name);
    if (!t)
      throw new Rejection(
        404,
        'ResourceNotFound',
        `The provisioning template ${name} does not exist.`,
        `RegisterThing names template ${name}, which does not exist (the name is the topic segment after $aws/provisioning-templates/)`,
      );
    if (t.type !== 'FLEET_PROVISIONING')
      throw new Rejection(
        400,
        'InvalidRequest',
        `The provisioning template ${name} is not a fleet provisioning template.`,
        `template ${name} is of type ${t.type}; RegisterThing needs a FLEET_PROVISIONING template`,
      );
    if (!t.enabled)
      throw new Rejection(
        400,
        'InvalidRequest',
        `The provisioning template ${name} is disabled.`,
        `template ${name} is disabled; enable it with UpdateProvisioningTemplate --enabled`,
      );
    return t;
  }

  /** The live token record for `token`, or a Rejection saying why it cannot be used. */
  function liveToken(token: string): { key: string; rec: FleetTokenRec } {
    const key = hashToken(token);
    const rec = store.get<FleetTokenRec>(C.fleetTokens, key);
    if (!rec)
      throw badToken(
        'Certificate ownership token is invalid.',
        'the certificateOwnershipToken was not issued by this endpoint (or was forgotten a day after it expired); use the token from CreateKeysAndCertificate or CreateCertificateFromCsr',
      );
    const base = { certificateId: rec.certificateId };
    if (rec.usedAt !== undefined)
      throw badToken(
        'Certificate ownership token has already been used.',
        `the certificateOwnershipToken of certificate ${rec.certificateId} was already used by a successful RegisterThing; tokens are single-use`,
        base,
      );
    if (inFlight.has(key))
      throw badToken(
        'Certificate ownership token is already being used.',
        `another RegisterThing with the certificateOwnershipToken of certificate ${rec.certificateId} is still running`,
        base,
      );
    if (rec.expired || ctx.now() >= rec.expiresAt)
      throw badToken(
        'Certificate ownership token has expired.',
        `the certificateOwnershipToken of certificate ${rec.certificateId} expired at ${new Date(rec.expiresAt * 1000).toISOString()} (${TOKEN_TTL_SECONDS} s after issue); call CreateKeysAndCertificate or CreateCertificateFromCsr again`,
        base,
      );
    const cert = store.get<CertRec>(C.certs, rec.certificateId);
    if (!cert || cert.status !== 'PENDING_ACTIVATION')
      throw badToken(
        'Certificate ownership token is invalid.',
        `certificate ${rec.certificateId} of this token is ${cert ? cert.status : 'deleted'}, no longer PENDING_ACTIVATION`,
        base,
      );
    return { key, rec };
  }

  async function registerThing(
    req: ServiceRequest,
    templateName: string,
    body: Record<string, unknown>,
  ): Promise<Record<string, unknown>> {
    const token = body.certificateOwnershipToken;
    if (token !== undefined && token !== null && typeof token !== 'string')
      throw badPayload(
        'certificateOwnershipToken must be a string.',
        `RegisterThing certificateOwnershipToken is ${describeType(token)}, not a string`,
      );
    if (!token)
      throw badToken(
        'Certificate ownership token cannot be empty.',
        'RegisterThing payload has no certificateOwnershipToken; pass the one CreateKeysAndCertificate or CreateCertificateFromCsr returned',
      );
    const parameters = readParameters(body);
    const template = usableTemplate(templateName);
    const { key, rec } = liveToken(token);
    const cert = store.get<CertRec>(C.certs, rec.certificateId)!;
    inFlight.add(key);
    let merged = parameters;
    let hookNote = '';
    try {
      if (template.preProvisioningHook) {
        const outcome = await deps.hooks.run(template.preProvisioningHook, {
          claimCertificateId: req.connection.certificateId,
          certificateId: cert.certificateId,
          certificatePem: cert.certificatePem,
          templateArn: template.templateArn,
          clientId: req.connection.clientId,
          parameters,
        });
        if (!outcome.allowed)
          throw new Rejection(
            403,
            'ACCESS_DENIED',
            'Access denied by the pre-provisioning hook.',
            `pre-provisioning hook of template ${templateName} denied provisioning: ${outcome.reason}`,
            {
              certificateId: cert.certificateId,
              hook: template.preProvisioningHook.targetArn,
              answer: outcome.answer,
            },
          );
        merged = { ...parameters, ...outcome.parameterOverrides };
        const keys = Object.keys(outcome.parameterOverrides);
        hookNote = `; hook allowed${keys.length ? ` and overrode ${keys.join(', ')}` : ''}`;
      }
      let done: Provisioned;
      try {
        // One transaction: the resources, the certificate's status and the token's use.
        done = store.transaction(() => {
          const p = provisionWithTemplate(ctx, {
            template: template.templateBody,
            flavor: 'fleet',
            parameters: merged,
            certificateId: cert.certificateId,
          });
          store.put(C.fleetTokens, key, { ...rec, usedAt: ctx.now() });
          return p;
        });
      } catch (e) {
        if (!(e instanceof IotError)) throw e;
        const code = e.errorName.replace(/Exception$/, '');
        throw new Rejection(e.status, code, e.message, `template ${templateName} failed: ${e.message}`, {
          certificateId: cert.certificateId,
          parameters: merged,
        });
      }
      const thingName = done.plan.thing?.thingName;
      record({
        kind: 'fleet.provisioned',
        clientId: req.connection.clientId,
        certificateId: cert.certificateId,
        topic: req.topic,
        reason: `RegisterThing with template ${templateName} provisioned ${thingName ? `thing ${thingName}` : 'no thing'}; certificate ${cert.certificateId} is ${done.certificate.status}${hookNote}`,
        details: { resourceArns: done.result.resourceArns, parameters: merged },
      });
      return { deviceConfiguration: done.plan.deviceConfiguration ?? {}, thingName };
    } finally {
      inFlight.delete(key);
    }
  }

  async function answer(req: ServiceRequest, t: FleetTopic): Promise<Record<string, unknown>> {
    if (deps.throttled?.(t.api))
      throw new Rejection(
        429,
        'ThrottlingException',
        'Rate exceeded',
        `${t.api} was throttled (the stand-in's faults throttle ${t.api}); the device should retry after a pause`,
      );
    const body = decodePayload(req.payload, t.format);
    if (t.api === 'CreateKeysAndCertificate') return createKeys(req);
    if (t.api === 'CreateCertificateFromCsr') return createFromCsr(req, body);
    return registerThing(req, t.templateName!, body);
  }

  return {
    handles: (topic) => parseFleetTopic(topic) !== undefined,

    async handle(req: ServiceRequest): Promise<ServiceReply[]> {
      const t = parseFleetTopic(req.topic);
      if (!t) return [];
      sweep();
      try {
        const accepted = await answer(req, t);
        return [{ topic: `${req.topic}/accepted`, payload: encodePayload(accepted, t.format) }];
      } catch (e) {
        let r: Rejection;
        if (e instanceof Rejection) r = e;
        else
          r = new Rejection(
            500,
            'InternalFailure',
            'An internal failure occurred.',
            `internal failure in ${t.api}: ${(e as Error).stack ?? String(e)}`,
          );
        record({
          kind: 'fleet.rejected',
          clientId: req.connection.clientId,
          certificateId: typeof r.details.certificateId === 'string' ? r.details.certificateId : undefined,
          topic: req.topic,
          reason: `${t.api} rejected (${r.statusCode} ${r.errorCode}): ${r.reason}`,
          details: { api: t.api, statusCode: r.statusCode, errorCode: r.errorCode, ...r.details },
        });
        return [
          {
            topic: `${req.topic}/rejected`,
            payload: encodePayload(
              { statusCode: r.statusCode, errorCode: r.errorCode, errorMessage: r.errorMessage },
              t.format,
            ),
          },
        ];
      }
    },

    sweep,
    close: () => {
      if (timer) clearInterval(timer);
    },
  };
}
