/**
 * The stand-in's MQTT endpoint: mutual TLS on loopback (the server certificate from
 * ServerPki, client certificates checked against the registry by auth.ts), MQTT 3.1.1 and 5
 * connections (session.ts), and AWS IoT's routing: subscriptions with `+`/`#`, iot:Receive
 * checked per delivery, persistent sessions, retained messages, lifecycle events, and the
 * reserved request topics answered by ReservedService implementations (contract.ts).
 */
import { X509Certificate } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import { C, R, arn, type Ctx, type PolicyRec, type ThingGroupRec, type ThingRec } from '../iot/model.js';
import type { ServerPki } from '../pki.js';
import { authenticate, subjectOf } from './auth.js';
import type { RecordEvent, ReservedService } from './contract.js';
import { presenceEvent, type DisconnectReason, type PresenceInfo } from './events.js';
import type { JitDeps } from './jit.js';
import {
  evaluate,
  parsePolicy,
  type Decision,
  type IotAction,
  type ParsedPolicy,
  type PolicyVariables,
} from './policy.js';
import {
  Connection,
  type BrokerPort,
  type Message,
  type SessionState,
  type Subscription,
} from './session.js';
import { filterMatches } from './topics.js';

export interface BrokerOptions {
  ctx: Ctx;
  pki: ServerPki;
  deviceCaPem: string;
  host: string;
  port: number;
  record: RecordEvent;
  /** Keep-alive bounds in seconds (AWS: 30..1200; 0 asks for the maximum). */
  keepAlive?: { min: number; max: number };
  /** Longest persistent-session expiry, seconds (AWS's default quota: 3600). */
  maxSessionExpiry?: number;
}

/** QoS 1 messages kept for one offline persistent session before the oldest are dropped. */
const MAX_QUEUED = 1000;

export type { Message, MessageProperties, SessionState, Subscription } from './session.js';

export class Broker implements BrokerPort {
  readonly record: RecordEvent;
  readonly jitDeps: JitDeps;
  private readonly ctx: Ctx;
  private readonly server: Server;
  private readonly deviceCa: X509Certificate;
  private readonly sessions = new Map<string, SessionState>();
  private readonly filters = new Map<string, Set<SessionState>>();
  private readonly retained = new Map<string, Message>();
  private readonly versions = new Map<string, number>();
  private readonly policyCache = new Map<string, ParsedPolicy>();
  private readonly connections = new Set<Connection>();
  private readonly services: ReservedService[] = [];
  private readonly observers: Array<(m: Message) => void> = [];
  private readonly keepAliveBounds: { min: number; max: number };
  private readonly maxSessionExpiry: number;
  private sweepTimer: NodeJS.Timeout | undefined;
  port = 0;

  constructor(private readonly options: BrokerOptions) {
    this.ctx = options.ctx;
    this.record = options.record;
    this.keepAliveBounds = options.keepAlive ?? { min: 30, max: 1200 };
    this.maxSessionExpiry = options.maxSessionExpiry ?? 3600;
    this.deviceCa = new X509Certificate(options.deviceCaPem);
    this.jitDeps = {
      ctx: this.ctx,
      record: this.record,
      publish: (topic, payload) => this.route({ topic, payload, qos: 1, retain: false }),
    };
    this.server = createServer({
      key: options.pki.serverKeyPem,
      cert: options.pki.serverCertPem,
      ca: [options.deviceCaPem],
      requestCert: true,
      // The chain is judged against the registry in authenticate(), at connection time.
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
      ALPNCallback: ({ protocols }) =>
        protocols.includes('x-amzn-mqtt-ca')
          ? 'x-amzn-mqtt-ca'
          : protocols.includes('mqtt')
            ? 'mqtt'
            : undefined,
    });
    this.server.on('secureConnection', (socket: TLSSocket) => this.accept(socket));
    this.server.on('tlsClientError', (err: Error & { code?: string }) =>
      this.record({
        kind: 'tls.failed',
        reason: `TLS handshake failed: ${err.code ?? ''} ${err.message}`.trim(),
      }),
    );
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port, this.options.host, () => resolve());
    });
    this.port = (this.server.address() as AddressInfo).port;
    this.sweepTimer = setInterval(() => this.sweep(), 10_000);
    this.sweepTimer.unref();
    return this.port;
  }

  /** Sees every message routed to all subscribers (the rules engine); called before delivery. */
  observe(observer: (m: Message) => void): void {
    this.observers.push(observer);
  }

  /** Adds a service for reserved request topics (fleet provisioning and the like). */
  addService(service: ReservedService): void {
    this.services.push(service);
  }

  async close(): Promise<void> {
    clearInterval(this.sweepTimer);
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    for (const c of this.connections) c.socket.destroy();
    await closed;
  }

  nowMs(): number {
    return Math.round(this.ctx.now() * 1000);
  }

  // ---- connections ----

  private accept(socket: TLSSocket): void {
    const leaf = socket.getPeerX509Certificate();
    if (!leaf) {
      this.record({
        kind: 'connect.refused',
        reason: 'the client sent no certificate; AWS IoT requires mutual TLS here',
      });
      socket.destroy();
      return;
    }
    const outcome = authenticate(this.ctx, this.deviceCa, leaf);
    if (outcome.kind === 'refused' && outcome.stage === 'handshake') {
      this.record({
        kind: 'connect.refused',
        certificateId: outcome.certificateId,
        reason: `${outcome.reason}; refused at the TLS handshake`,
      });
      socket.destroy();
      return;
    }
    const conn = new Connection(this, socket, outcome, subjectOf(leaf));
    this.connections.add(conn);
    socket.once('close', () => this.connections.delete(conn));
  }

  keepAlive(requested: number): number {
    const { min, max } = this.keepAliveBounds;
    if (requested === 0 || requested > max) return max;
    return Math.max(requested, min);
  }

  /** The session expiry granted for a request (undefined: a 3.1.1 persistent session). */
  sessionExpiry(requested: number | undefined): number {
    if (requested === undefined) return this.maxSessionExpiry;
    return Math.min(requested, this.maxSessionExpiry);
  }

  nextPresenceVersion(clientId: string): number {
    const v = this.versions.get(clientId) ?? 0;
    this.versions.set(clientId, v + 1);
    return v;
  }

  // ---- authorisation ----

  private policy(name: string): ParsedPolicy | undefined {
    const rec = this.ctx.store.get<PolicyRec>(C.policies, name);
    if (!rec) return undefined;
    const key = `${name}\n${rec.generationId}\n${rec.lastModifiedDate}`;
    let p = this.policyCache.get(key);
    if (!p) {
      p = parsePolicy(name, rec.policyDocument);
      if (this.policyCache.size > 5000) this.policyCache.clear();
      this.policyCache.set(key, p);
    }
    return p;
  }

  /** The policies and variables that decide for this connection (certificate + thing groups). */
  private principal(conn: Connection): { policies: ParsedPolicy[]; vars: PolicyVariables } {
    const { store } = this.ctx;
    const cert = conn.auth.kind === 'ok' ? conn.auth.cert : undefined;
    const vars: PolicyVariables = { clientId: conn.clientId, subject: conn.subject };
    if (!cert) return { policies: [], vars };
    const names = new Set(store.leftOf(R.policyTarget, cert.certificateArn));
    if (store.linked(R.thingPrincipal, conn.clientId, cert.certificateArn)) {
      const thing = store.get<ThingRec>(C.things, conn.clientId);
      if (thing) {
        vars.thing = {
          thingName: thing.thingName,
          attributes: thing.attributes,
          ...(thing.thingTypeName !== undefined ? { thingTypeName: thing.thingTypeName } : {}),
        };
        // Thing-group policies apply to a thing's certificate when it connects as the thing.
        const seen = new Set<string>();
        const queue = store.rightOf(R.thingGroup, thing.thingName);
        while (queue.length) {
          const g = queue.shift()!;
          if (seen.has(g)) continue;
          seen.add(g);
          for (const n of store.leftOf(R.policyTarget, arn.thingGroup(this.ctx, g))) names.add(n);
          const parent = store.get<ThingGroupRec>(C.thingGroups, g)?.parentGroupName;
          if (parent) queue.push(parent);
        }
      }
    }
    const policies = [...names]
      .sort()
      .map((n) => this.policy(n))
      .filter((p): p is ParsedPolicy => p !== undefined);
    return { policies, vars };
  }

  authorize(conn: Connection, action: IotAction, resource: string): Decision {
    const { policies, vars } = this.principal(conn);
    return evaluate(policies, action, `arn:aws:iot:${this.ctx.region}:${this.ctx.account}:${resource}`, vars);
  }

  // ---- sessions ----

  attach(
    conn: Connection,
    o: { clean: boolean; expirySeconds: number },
  ): { session: SessionState; present: boolean } {
    let s = this.sessions.get(conn.clientId);
    if (s?.connection && s.connection !== conn) s.connection.kick();
    s = this.sessions.get(conn.clientId);
    if (s && s.expiresAt !== undefined && s.expiresAt <= this.ctx.now()) {
      this.removeSession(s);
      s = undefined;
    }
    let present = false;
    if (s && !o.clean) present = true;
    else {
      if (s) this.removeSession(s);
      s = { clientId: conn.clientId, subscriptions: new Map(), queue: [], expirySeconds: 0 };
      this.sessions.set(conn.clientId, s);
    }
    s.expirySeconds = o.expirySeconds;
    s.connection = conn;
    delete s.expiresAt;
    return { session: s, present };
  }

  /** After CONNACK: sends what a resumed session kept. */
  resume(conn: Connection): void {
    const s = conn.session!;
    const waiting = s.queue.splice(0);
    for (const m of waiting) this.deliverQueued(conn, m);
  }

  detach(
    conn: Connection,
    reason: DisconnectReason,
    presence: PresenceInfo,
    will: Message | undefined,
  ): void {
    const s = conn.session;
    if (s && s.connection === conn) {
      delete s.connection;
      const unacked = conn.takeInflight();
      if (s.expirySeconds > 0) {
        s.queue.unshift(...unacked);
        s.expiresAt = this.ctx.now() + s.expirySeconds;
      } else this.removeSession(s);
    }
    this.record({
      kind: 'disconnect',
      clientId: conn.clientId,
      certificateId: conn.certificateId,
      reason: `connection ended: ${reason}`,
    });
    if (!conn.clientId.includes('+') && !conn.clientId.includes('#')) {
      const ev = presenceEvent({ ...presence, timestampMs: this.nowMs() }, reason);
      this.route({ topic: ev.topic, payload: ev.payload, qos: 1, retain: false });
    }
    if (will) {
      const d = this.authorize(conn, 'iot:Publish', `topic/${will.topic}`);
      if (d.allowed) this.route(will);
      else
        this.record({
          kind: 'publish.denied',
          clientId: conn.clientId,
          certificateId: conn.certificateId,
          topic: will.topic,
          reason: `the will message was not published: ${d.reason}`,
        });
    }
  }

  presenceConnected(p: PresenceInfo): void {
    if (p.clientId.includes('+') || p.clientId.includes('#')) return;
    const ev = presenceEvent(p);
    this.route({ topic: ev.topic, payload: ev.payload, qos: 1, retain: false });
  }

  private removeSession(s: SessionState): void {
    for (const f of s.subscriptions.keys()) this.unindex(s, f);
    if (this.sessions.get(s.clientId) === s) this.sessions.delete(s.clientId);
  }

  private sweep(): void {
    const now = this.ctx.now();
    for (const s of this.sessions.values())
      if (!s.connection && s.expiresAt !== undefined && s.expiresAt <= now) this.removeSession(s);
  }

  // ---- subscriptions ----

  subscribe(s: SessionState, filter: string, sub: Subscription): void {
    s.subscriptions.set(filter, sub);
    let set = this.filters.get(filter);
    if (!set) this.filters.set(filter, (set = new Set()));
    set.add(s);
  }

  unsubscribe(s: SessionState, filter: string): boolean {
    if (!s.subscriptions.delete(filter)) return false;
    this.unindex(s, filter);
    return true;
  }

  private unindex(s: SessionState, filter: string): void {
    const set = this.filters.get(filter);
    set?.delete(s);
    if (set && !set.size) this.filters.delete(filter);
  }

  // ---- routing ----

  /** A PUBLISH a client was allowed to make: to its reserved service, or to subscribers. */
  publishFromClient(conn: Connection, message: Message): void {
    const service = this.services.find((s) => s.handles(message.topic));
    if (!service) return this.route(message);
    service
      .handle({
        topic: message.topic,
        payload: message.payload,
        connection: {
          clientId: conn.clientId,
          certificateId: conn.certificateId,
          protocolVersion: conn.version ?? 4,
        },
      })
      .then((replies) => {
        // AWS answers "through the same MQTT connection used to publish the API request"
        // (DG fleet-provision-api): other subscribers (devices sharing a claim) get nothing.
        for (const r of replies)
          this.route({ topic: r.topic, payload: r.payload, qos: 1, retain: false }, conn.session);
      })
      .catch((e: unknown) =>
        this.record({
          kind: 'service.failed',
          clientId: conn.clientId,
          certificateId: conn.certificateId,
          topic: message.topic,
          reason: `the service for ${message.topic} failed: ${(e as Error).message}`,
        }),
      );
  }

  /** Publishes a message of the broker's own (lifecycle and registry events). */
  publish(topic: string, payload: Buffer): void {
    this.route({ topic, payload, qos: 1, retain: false });
  }

  /** Routes to every matching subscription, or only to `only`'s (answers of reserved services). */
  private route(message: Message, only?: SessionState): void {
    if (!only) for (const o of this.observers) o(message);
    if (message.retain) {
      if (message.payload.length === 0) this.retained.delete(message.topic);
      else this.retained.set(message.topic, { ...message });
    }
    const targets = new Map<SessionState, 0 | 1>();
    for (const [filter, sessions] of this.filters) {
      if (!filterMatches(filter, message.topic)) continue;
      for (const s of sessions) {
        if (only && s !== only) continue;
        const sub = s.subscriptions.get(filter)!;
        if (sub.noLocal && message.origin === s.clientId) continue;
        const q = Math.min(message.qos, sub.qos) as 0 | 1;
        if ((targets.get(s) ?? -1) < q) targets.set(s, q);
      }
    }
    for (const [s, qos] of targets) {
      if (s.connection) this.deliverChecked(s.connection, message, qos);
      else if (qos === 1) {
        s.queue.push({ ...message, qos });
        if (s.queue.length > MAX_QUEUED) s.queue.shift();
      }
    }
  }

  private deliverChecked(conn: Connection, message: Message, qos: 0 | 1): void {
    const d = this.authorize(conn, 'iot:Receive', `topic/${message.topic}`);
    if (!d.allowed) {
      this.record({
        kind: 'receive.denied',
        clientId: conn.clientId,
        certificateId: conn.certificateId,
        topic: message.topic,
        reason: `${d.reason}; the message was not delivered`,
      });
      return;
    }
    conn.deliver(message, qos);
  }

  /** Delivers a message a session kept (queued or over the receive maximum). */
  deliverQueued(conn: Connection, message: Message): void {
    this.deliverChecked(conn, message, message.qos);
  }

  deliverRetained(conn: Connection, filter: string, qos: 0 | 1): void {
    for (const m of this.retained.values()) {
      if (!filterMatches(filter, m.topic)) continue;
      this.deliverChecked(conn, { ...m, retainedDelivery: true }, Math.min(qos, m.qos) as 0 | 1);
    }
  }

  /** Certificates currently connected, for status output. */
  connectedCount(): number {
    let n = 0;
    for (const c of this.connections) if (c.accepted && c.session?.connection === c) n++;
    return n;
  }
}
