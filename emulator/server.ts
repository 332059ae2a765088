/**
 * The stand-in's HTTP side: an AWS IoT control-plane listener (REST-JSON, SigV4 service
 * `iot`, plus the `/_emulator/*` admin endpoints) and an S3 listener, over one state
 * directory. `startEmulator` is what workers/emulator.ts, the tests and the bench call.
 *
 * State directory layout:
 *   store/        snapshot.json + wal.ndjson (things, certs, policies, CAs, templates, tasks)
 *   ca/           device-ca.key.pem (0600), device-ca.cert.pem; root-ca.{key,cert}.pem and
 *                 server.{key,cert}.pem of the MQTT endpoint (keys 0600)
 *   s3/<bucket>/  objects
 *   tasks/        per-task report journals while a bulk task runs
 *   events.ndjson the data plane's reasons log (see emulator/mqtt/events.ts)
 *
 * A third listener, the MQTT endpoint (emulator/mqtt/broker.ts), speaks AWS IoT's data
 * plane over mutual TLS on the same host.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BulkRunner } from './bulk/tasks.js';
import { IotError } from './errors.js';
import { FaultPlan, type FaultsInput } from './faults.js';
import { caOps } from './iot/cas.js';
import { certOps } from './iot/certs.js';
import { R, type Ctx, type Handler } from './iot/model.js';
import { policyOps } from './iot/policies.js';
import { registerOps } from './iot/register.js';
import { templateOps } from './iot/templates.js';
import { thingOps } from './iot/things.js';
import { Broker } from './mqtt/broker.js';
import type { RecordEvent, ReservedService } from './mqtt/contract.js';
import { fleetService } from './mqtt/fleet.js';
import { HookRunner, Lambdas, type LambdaTarget } from './mqtt/hooks.js';
import { EventLog } from './mqtt/events.js';
import { DeviceCa, ServerPki } from './pki.js';
import { matchRoute } from './routes.js';
import { RulesEngine } from './rules/engine.js';
import { ruleOps } from './rules/ops.js';
import { ObjectStore } from './s3/objects.js';
import { handleS3 } from './s3/handler.js';
import { presignUrl, sha256Hex, verifySigV4, type Credentials } from './sigv4.js';
import { Store, type FsyncPolicy } from './store.js';

export interface EmulatorOptions {
  stateDir: string;
  host?: string;
  /** 0 (default) picks a free port. */
  port?: number;
  s3Port?: number;
  /** MQTT (mutual TLS) port; 0 (default) picks a free port. */
  mqttPort?: number;
  /** Keep-alive bounds of the MQTT endpoint in seconds (default AWS's 30..1200); for tests. */
  mqttKeepAlive?: { min: number; max: number };
  /** Lambda function ARN → endpoint, for pre-provisioning hooks (`--lambda`; also PUT /_emulator/lambdas). */
  lambdas?: Array<[arn: string, target: LambdaTarget]>;
  /** Services for reserved request topics, made once the broker exists (tests add their own). */
  services?: (deps: ServiceDeps) => ReservedService[];
  region?: string;
  account?: string;
  /** Key pairs accepted by SigV4 verification (at least one). */
  credentials: Credentials[];
  fsync?: FsyncPolicy;
  faults?: FaultsInput;
  /** Where to report unexpected failures (default stderr). */
  log?: (line: string) => void;
  /** Buckets to create at start. */
  buckets?: string[];
}

/** What a reserved-topic service gets from the stand-in. */
export interface ServiceDeps {
  ctx: Ctx;
  record: RecordEvent;
}

export interface Emulator {
  iotUrl: string;
  s3Url: string;
  /** `localhost:<port>` of the MQTT endpoint (what DescribeEndpoint iot:Data-ATS returns). */
  mqttEndpoint: string;
  mqttPort: number;
  /** PEM file of the root CA that signs the MQTT server certificate (devices trust it). */
  rootCaFile: string;
  broker: Broker;
  events: EventLog;
  /** Lambda function ARN → endpoint (hooks and topic-rule actions; PUT /_emulator/lambdas changes it). */
  lambdas: Lambdas;
  /** Skews the stand-in's clock (token and certificate expiry) by this many seconds. */
  setClockOffset(seconds: number): void;
  region: string;
  account: string;
  faults: FaultPlan;
  runner: BulkRunner;
  ca: DeviceCa;
  objects: ObjectStore;
  close(): Promise<void>;
}

/** The JS SDK signs as `iot`; AWS CLI v2 (botocore model metadata) as `execute-api`. */
export const IOT_SIGNING_NAMES = ['iot', 'execute-api'] as const;
const MAX_IOT_BODY = 1024 * 1024;
const MAX_S3_BODY = 256 * 1024 * 1024;

/** A request body over the limit; the reply goes out once the body is drained. */
class BodyTooLarge extends Error {
  constructor(
    readonly size: number,
    readonly limit: number,
    /** True when the peer kept sending past the drain bound (the socket is closed after the reply). */
    readonly abandoned: boolean,
  ) {
    super(`The request body is larger than ${limit} bytes.`);
  }
}

/** Bytes read and thrown away after the limit, so the client reads the error and not a reset. */
const DRAIN_LIMIT = 64 * 1024 * 1024;

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= limit) {
        chunks.push(c);
        return;
      }
      if (!over) {
        over = true;
        chunks.length = 0;
      }
      if (size > DRAIN_LIMIT) {
        req.pause();
        reject(new BodyTooLarge(size, limit, true));
      }
    });
    req.on('end', () =>
      over ? reject(new BodyTooLarge(size, limit, false)) : resolve(Buffer.concat(chunks)),
    );
    req.on('error', reject);
  });
}

/** Replies to an oversized body and closes the connection after the reply is written. */
function tooLarge(req: IncomingMessage, res: ServerResponse, e: BodyTooLarge, xml: boolean): void {
  const message = `The request body (${e.abandoned ? 'more than ' : ''}${e.size} bytes) is larger than the limit of ${e.limit} bytes.`;
  res.on('finish', () => {
    if (e.abandoned) setTimeout(() => req.socket.destroy(), 100).unref();
  });
  if (xml) {
    const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>EntityTooLarge</Code><Message>${message}</Message><MaxSizeAllowed>${e.limit}</MaxSizeAllowed></Error>`;
    res.writeHead(400, {
      'content-type': 'application/xml',
      connection: 'close',
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
    return;
  }
  sendJson(
    res,
    413,
    { message },
    { 'x-amzn-ErrorType': 'RequestEntityTooLargeException', connection: 'close' },
  );
}

function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const data = body === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': data.length, ...headers });
  res.end(data);
}

function listen(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve((server.address() as AddressInfo).port));
  });
}

export async function startEmulator(options: EmulatorOptions): Promise<Emulator> {
  const host = options.host ?? '127.0.0.1';
  const region = options.region ?? 'us-east-1';
  const account = options.account ?? '123456789012';
  const log = options.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  if (!options.credentials.length) throw new Error('the stand-in needs at least one access key');
  const secrets = new Map(options.credentials.map((c) => [c.accessKeyId, c.secretAccessKey]));
  const secretFor = (id: string): string | undefined => secrets.get(id);

  const store = new Store({
    dir: join(options.stateDir, 'store'),
    fsync: options.fsync ?? 'interval',
    relations: Object.values(R),
  });
  const ca = DeviceCa.loadOrCreate(join(options.stateDir, 'ca'));
  const objects = new ObjectStore(join(options.stateDir, 's3'));
  for (const b of options.buckets ?? []) objects.createBucket(b);
  const faults = new FaultPlan(options.faults ?? {});
  let clockOffset = 0;
  const ctx: Ctx = { store, ca, region, account, now: () => Date.now() / 1000 + clockOffset };
  const events = new EventLog({
    file: join(options.stateDir, 'events.ndjson'),
    nowMs: () => Math.round(ctx.now() * 1000),
  });
  const pki = ServerPki.loadOrCreate(join(options.stateDir, 'ca'), ['localhost', '127.0.0.1']);
  const broker = new Broker({
    ctx,
    pki,
    deviceCaPem: ca.certPem,
    host,
    port: options.mqttPort ?? 0,
    record: events.record,
    ...(options.mqttKeepAlive ? { keepAlive: options.mqttKeepAlive } : {}),
  });
  const mqttPort = await broker.listen();
  const mqttEndpoint = `localhost:${mqttPort}`;
  // Reserved request topics: services a caller (a test) adds, then fleet provisioning.
  const reservedServices: ReservedService[] = [...(options.services?.({ ctx, record: events.record }) ?? [])];
  for (const service of reservedServices) broker.addService(service);
  // Fleet provisioning (emulator/mqtt/fleet.ts), its hooks run through the ARN → endpoint map.
  const lambdas = new Lambdas(options.lambdas ?? []);
  const fleet = fleetService(ctx, {
    record: events.record,
    hooks: new HookRunner(lambdas),
    // The faults' throttle applies to the fleet MQTT APIs when named (not through "*").
    throttled: (api) => faults.faults.throttle[api] !== undefined && faults.throttled(api),
  });
  broker.addService(fleet);
  // Topic rules (emulator/rules): every routed message, the stand-in's own events included.
  const rules = new RulesEngine(ctx, lambdas, events.record);
  broker.observe((m) =>
    rules.onMessage({ topic: m.topic, payload: m.payload, ...(m.origin ? { clientId: m.origin } : {}) }),
  );

  const iotServer = createServer();
  const s3Server = createServer();
  const iotPort = await listen(iotServer, host, options.port ?? 0);
  const s3Port = await listen(s3Server, host, options.s3Port ?? 0);
  const iotUrl = `http://${host}:${iotPort}`;
  const s3Url = `http://${host}:${s3Port}`;
  const signer = options.credentials[0]!;

  const runner = new BulkRunner({
    ctx,
    objects,
    faults,
    dir: join(options.stateDir, 'tasks'),
    presign: (bucket, key, expiresSec) =>
      presignUrl({
        baseUrl: s3Url,
        path: `/${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`,
        credentials: signer,
        region,
        service: 's3',
        expiresSec,
      }),
  });
  const handlers: Record<string, Handler> = {
    ...thingOps(ctx),
    ...certOps(ctx),
    ...policyOps(ctx),
    ...caOps(ctx, { dataAtsEndpoint: mqttEndpoint }),
    ...templateOps(ctx),
    ...registerOps(ctx),
    ...ruleOps(ctx),
    ...runner.ops(),
  };

  const admin = (
    req: IncomingMessage,
    body: Buffer,
    res: ServerResponse,
    path: string,
    query: URLSearchParams,
  ): void => {
    if (path === '/_emulator/health')
      return sendJson(res, 200, {
        ok: true,
        iotUrl,
        s3Url,
        region,
        account,
        pid: process.pid,
        walBytes: store.walSize(),
        mqttEndpoint,
        rootCaFile: pki.rootCertFile,
        mqttConnections: broker.connectedCount(),
        clockOffsetSeconds: clockOffset,
      });
    if (path === '/_emulator/root-ca') {
      res.writeHead(200, { 'content-type': 'application/x-pem-file' });
      res.end(pki.rootCertPem);
      return;
    }
    if (path === '/_emulator/events' && req.method === 'GET') {
      const num = (name: string): number | undefined => {
        const v = query.get(name);
        return v !== null && /^\d+$/.test(v) ? Number(v) : undefined;
      };
      const clientId = query.get('clientId') ?? query.get('client-id');
      return sendJson(
        res,
        200,
        events.query({
          ...(num('since') !== undefined ? { since: num('since')! } : {}),
          ...(num('limit') !== undefined ? { limit: Math.min(num('limit')!, 10_000) } : {}),
          ...(clientId !== null ? { clientId } : {}),
        }),
      );
    }
    if (path === '/_emulator/lambdas' && req.method === 'GET') return sendJson(res, 200, lambdas.toJSON());
    if (path === '/_emulator/lambdas' && req.method === 'PUT') {
      try {
        const next = lambdas.update(
          JSON.parse(body.toString('utf8') || '{}'),
          query.get('replace') === 'true',
        );
        return sendJson(res, 200, next);
      } catch (e) {
        return sendJson(res, 400, { message: `invalid lambdas: ${(e as Error).message}` });
      }
    }
    if (path === '/_emulator/clock' && req.method === 'GET')
      return sendJson(res, 200, { offsetSeconds: clockOffset, now: ctx.now() });
    if (path === '/_emulator/clock' && req.method === 'POST') {
      let offset: unknown;
      try {
        offset = (JSON.parse(body.toString('utf8') || '{}') as { offsetSeconds?: unknown }).offsetSeconds;
      } catch (e) {
        return sendJson(res, 400, { message: `invalid JSON: ${(e as Error).message}` });
      }
      if (typeof offset !== 'number' || !Number.isFinite(offset))
        return sendJson(res, 400, { message: 'offsetSeconds must be a finite number of seconds' });
      clockOffset = offset;
      return sendJson(res, 200, { offsetSeconds: clockOffset, now: ctx.now() });
    }
    if (path === '/_emulator/device-ca') {
      res.writeHead(200, { 'content-type': 'application/x-pem-file' });
      res.end(ca.certPem);
      return;
    }
    if (path === '/_emulator/faults' && req.method === 'GET') return sendJson(res, 200, faults.faults);
    if (path === '/_emulator/faults' && req.method === 'PUT') {
      try {
        return sendJson(
          res,
          200,
          faults.update(
            JSON.parse(body.toString('utf8') || '{}') as FaultsInput,
            query.get('replace') === 'true',
          ),
        );
      } catch (e) {
        return sendJson(res, 400, { message: `invalid faults: ${(e as Error).message}` });
      }
    }
    return sendJson(res, 404, { message: `no admin endpoint ${req.method} ${path}` });
  };

  iotServer.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const requestId = randomUUID();
    const fail = (e: IotError): void =>
      sendJson(
        res,
        e.status,
        { message: e.message, ...e.extra },
        { 'x-amzn-ErrorType': e.errorName, 'x-amzn-RequestId': requestId },
      );
    void (async () => {
      const url = req.url ?? '/';
      const qi = url.indexOf('?');
      const rawPath = qi < 0 ? url : url.slice(0, qi);
      const rawQuery = qi < 0 ? '' : url.slice(qi + 1);
      const query = new URLSearchParams(rawQuery);
      const body = await readBody(req, MAX_IOT_BODY);
      if (rawPath.startsWith('/_emulator/')) return admin(req, body, res, rawPath, query);
      const declared = req.headers['x-amz-content-sha256'];
      const auth = verifySigV4(
        {
          method: req.method ?? 'GET',
          path: rawPath,
          query: rawQuery,
          headers: req.headers,
          payloadHash: typeof declared === 'string' ? declared : sha256Hex(body),
        },
        IOT_SIGNING_NAMES,
        secretFor,
        Date.now(),
        region,
      );
      if ('kind' in auth) {
        const name =
          auth.kind === 'missing'
            ? 'MissingAuthenticationTokenException'
            : auth.kind === 'unknown-key'
              ? 'UnrecognizedClientException'
              : 'InvalidSignatureException';
        return fail(new IotError(name, auth.message));
      }
      const route = matchRoute(req.method ?? 'GET', rawPath);
      if (!route)
        return sendJson(
          res,
          404,
          { message: `No operation matches ${req.method} ${rawPath}` },
          { 'x-amzn-ErrorType': 'UnknownOperationException', 'x-amzn-RequestId': requestId },
        );
      let json: Record<string, unknown> = {};
      if (body.length) {
        try {
          json = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
        } catch {
          throw new IotError('InvalidRequestException', 'The request body is not valid JSON.');
        }
        if (typeof json !== 'object' || json === null || Array.isArray(json))
          throw new IotError('InvalidRequestException', 'The request body must be a JSON object.');
      }
      const delay = faults.latency(route.operation);
      if (delay) await sleep(delay);
      if (faults.throttled(route.operation)) throw new IotError('ThrottlingException', 'Rate exceeded');
      const result = handlers[route.operation]!({
        path: route.path,
        query,
        headers: req.headers,
        body: json,
        requestId,
      });
      sendJson(res, 200, result ?? {}, { 'x-amzn-RequestId': requestId });
    })().catch((e: unknown) => {
      if (e instanceof BodyTooLarge) return tooLarge(req, res, e, false);
      if (e instanceof IotError) return fail(e);
      log(
        `provline emulator: internal failure on ${req.method} ${req.url}: ${(e as Error).stack ?? String(e)}`,
      );
      fail(new IotError('InternalFailureException', 'An internal failure occurred.'));
    });
  });

  s3Server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    readBody(req, MAX_S3_BODY)
      .then((body) => handleS3({ objects, region, secretFor }, req, body, res))
      .catch((e: unknown) => {
        if (e instanceof BodyTooLarge) return tooLarge(req, res, e, true);
        res.writeHead(400, { 'content-type': 'application/xml' });
        res.end(
          `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidRequest</Code><Message>${String((e as Error).message)}</Message></Error>`,
        );
      });
  });

  runner.recover();

  return {
    iotUrl,
    lambdas,
    s3Url,
    region,
    account,
    faults,
    runner,
    ca,
    objects,
    mqttEndpoint,
    mqttPort,
    rootCaFile: pki.rootCertFile,
    broker,
    events,
    setClockOffset(seconds: number) {
      clockOffset = seconds;
    },
    async close() {
      fleet.close();
      rules.close();
      await broker.close();
      await runner.close();
      const closed = [iotServer, s3Server].map((s) => new Promise<void>((r) => s.close(() => r())));
      iotServer.closeAllConnections();
      s3Server.closeAllConnections();
      await Promise.all(closed);
      events.close();
      store.close();
    },
  };
}
