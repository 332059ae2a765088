/**
 * One MQTT connection over TLS: the CONNECT handshake (authentication outcome from the TLS
 * layer, JITR/JITP, iot:Connect), then PUBLISH / SUBSCRIBE / UNSUBSCRIBE / PINGREQ /
 * DISCONNECT with AWS IoT's rules, keep-alive and QoS 1 delivery. Routing, sessions and
 * retained messages belong to the broker (broker.ts); this file speaks the protocol.
 *
 * How violations end (docs/emulator.md "Data plane"): MQTT 3.1.1 has no way to say why, so
 * the connection is closed (a refused CONNECT gets no CONNACK, as on AWS); MQTT 5 gets the
 * reason code in CONNACK, SUBACK, PUBACK or DISCONNECT.
 */
import { randomUUID } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import mqtt, {
  type IConnectPacket,
  type IPublishPacket,
  type ISubscribePacket,
  type IUnsubscribePacket,
  type Packet,
} from 'mqtt-packet';
import type { AuthOutcome } from './auth.js';
import type { RecordEvent } from './contract.js';
import type { DisconnectReason, PresenceInfo } from './events.js';
import { FrameError, Framer } from './frames.js';
import { justInTime, type JitDeps } from './jit.js';
import type { Decision, IotAction } from './policy.js';
import { topicProblem } from './topics.js';

/** AWS IoT's payload limit for a PUBLISH. */
export const MAX_PAYLOAD_BYTES = 128 * 1024;
/** What the framer accepts: the payload limit plus room for a topic and properties. */
export const MAX_PACKET_BYTES = MAX_PAYLOAD_BYTES + 16 * 1024;
/** Maximum Packet Size the stand-in announces in an MQTT 5 CONNACK. */
export const ANNOUNCED_MAX_PACKET = MAX_PACKET_BYTES;
export const MAX_CLIENT_ID_BYTES = 128;
export const MAX_FILTERS_PER_SUBSCRIBE = 8;
export const MAX_SUBSCRIPTIONS_PER_CONNECTION = 50;
export const TOPIC_ALIAS_MAXIMUM = 8;
export const MAX_INFLIGHT = 100;
/** How long a TLS connection may wait before sending CONNECT. */
const CONNECT_TIMEOUT_MS = 20_000;

type Version = 4 | 5;

const RC = {
  success: 0x00,
  noSubscriptionExisted: 0x11,
  unspecified: 0x80,
  malformed: 0x81,
  protocolError: 0x82,
  unsupportedVersion: 0x84,
  badClientId: 0x85,
  notAuthorized: 0x87,
  keepAliveTimeout: 0x8d,
  sessionTakenOver: 0x8e,
  topicFilterInvalid: 0x8f,
  topicNameInvalid: 0x90,
  topicAliasInvalid: 0x94,
  packetTooLarge: 0x95,
  quotaExceeded: 0x97,
  qosNotSupported: 0x9b,
  sharedNotSupported: 0x9e,
} as const;

export interface MessageProperties {
  payloadFormatIndicator?: boolean;
  messageExpiryInterval?: number;
  contentType?: string;
  responseTopic?: string;
  correlationData?: Buffer;
  userProperties?: Record<string, string | string[]>;
}

export interface Message {
  topic: string;
  payload: Buffer;
  qos: 0 | 1;
  retain: boolean;
  /** Client id of the publisher (for MQTT 5 No Local); absent for the broker's own messages. */
  origin?: string;
  properties?: MessageProperties;
  /** Set when the message goes out because of a new subscription to a retained topic. */
  retainedDelivery?: boolean;
}

export interface Subscription {
  qos: 0 | 1;
  noLocal: boolean;
}

export interface SessionState {
  clientId: string;
  subscriptions: Map<string, Subscription>;
  /** QoS 1 messages waiting for the client (offline, or over its receive maximum). */
  queue: Message[];
  /** 0 = the session ends with the connection. */
  expirySeconds: number;
  /** Epoch seconds; set while no connection holds the session. */
  expiresAt?: number;
  connection?: Connection;
}

/**
 * What a connection needs of the broker that owns it (broker.ts implements it): authorisation,
 * session bookkeeping, routing and presence. Declared here so the protocol side depends on no
 * broker internals.
 */
export interface BrokerPort {
  readonly record: RecordEvent;
  readonly jitDeps: JitDeps;
  nowMs(): number;
  keepAlive(requested: number): number;
  sessionExpiry(requested: number | undefined): number;
  nextPresenceVersion(clientId: string): number;
  authorize(conn: Connection, action: IotAction, resource: string): Decision;
  attach(
    conn: Connection,
    o: { clean: boolean; expirySeconds: number },
  ): { session: SessionState; present: boolean };
  resume(conn: Connection): void;
  detach(conn: Connection, reason: DisconnectReason, presence: PresenceInfo, will: Message | undefined): void;
  presenceConnected(p: PresenceInfo): void;
  subscribe(s: SessionState, filter: string, sub: Subscription): void;
  unsubscribe(s: SessionState, filter: string): boolean;
  publishFromClient(conn: Connection, message: Message): void;
  deliverQueued(conn: Connection, message: Message): void;
  deliverRetained(conn: Connection, filter: string, qos: 0 | 1): void;
}

export class Connection {
  version: Version | undefined;
  clientId = '';
  session: SessionState | undefined;
  accepted = false;
  private closed = false;
  private readonly framer = new Framer(MAX_PACKET_BYTES);
  private parser: ReturnType<typeof mqtt.parser> | undefined;
  private keepAliveTimer: NodeJS.Timeout | undefined;
  private connectTimer: NodeJS.Timeout | undefined;
  private readonly inflight = new Map<number, Message>();
  private nextId = 1;
  private readonly aliases = new Map<number, string>();
  private receiveMaximum = MAX_INFLIGHT;
  private clientMaxPacket = Infinity;
  private will: Message | undefined;
  private presence: PresenceInfo | undefined;
  readonly remoteAddress: string;

  constructor(
    private readonly broker: BrokerPort,
    readonly socket: TLSSocket,
    readonly auth: AuthOutcome,
    /** Subject attributes of the client certificate (for policy variables). */
    readonly subject: Record<string, string>,
  ) {
    this.remoteAddress = `${socket.remoteAddress ?? '127.0.0.1'}:${socket.remotePort ?? 0}`;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => undefined);
    socket.on('end', () => this.drop('CONNECTION_LOST', true));
    socket.on('close', () => this.drop('CONNECTION_LOST', false));
    this.connectTimer = setTimeout(() => {
      this.log('connect.refused', 'no CONNECT packet within 20 s of the TLS handshake');
      this.end();
    }, CONNECT_TIMEOUT_MS);
    this.connectTimer.unref();
  }

  get certificateId(): string {
    return this.auth.kind === 'ok' ? this.auth.cert.certificateId : this.auth.certificateId;
  }

  private log(
    kind: string,
    reason: string,
    extra: { topic?: string; details?: Record<string, unknown> } = {},
  ): void {
    this.broker.record({
      kind,
      ...(this.clientId ? { clientId: this.clientId } : {}),
      certificateId: this.certificateId,
      reason,
      ...extra,
    });
  }

  // ---- bytes in ----

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    let frames: Buffer[];
    try {
      frames = this.framer.push(chunk);
    } catch (e) {
      const fe = e as FrameError;
      this.log(
        fe.code === 'too-large' ? 'publish.refused' : 'protocol.error',
        `${fe.message}; connection closed`,
      );
      return this.violation(fe.code === 'too-large' ? RC.packetTooLarge : RC.malformed, 'CLIENT_ERROR');
    }
    for (const frame of frames) {
      if (this.closed) return;
      let packet: Packet | undefined;
      let error: Error | undefined;
      const parser = this.parser ?? mqtt.parser({});
      parser.removeAllListeners();
      parser.on('packet', (p: Packet) => (packet = p));
      parser.on('error', (err: Error) => (error = err));
      try {
        parser.parse(frame);
      } catch (err) {
        error = err as Error;
      }
      if (error || !packet) {
        this.log(
          'protocol.error',
          `malformed ${this.version ? `MQTT ${this.version === 5 ? '5' : '3.1.1'} ` : ''}packet: ${error?.message ?? 'incomplete'}; connection closed`,
        );
        return this.violation(RC.malformed, 'CLIENT_ERROR');
      }
      this.touch();
      try {
        this.onPacket(packet);
      } catch (err) {
        this.log(
          'protocol.error',
          `internal failure handling ${packet.cmd}: ${(err as Error).message}; connection closed`,
        );
        return this.violation(RC.unspecified, 'SERVER_INITIATED_DISCONNECT');
      }
    }
  }

  private touch(): void {
    this.keepAliveTimer?.refresh();
  }

  private onPacket(p: Packet): void {
    if (!this.version) {
      if (p.cmd !== 'connect') {
        this.log(
          'protocol.error',
          `the first packet was ${p.cmd.toUpperCase()}, not CONNECT; connection closed`,
        );
        return this.end();
      }
      return this.onConnect(p);
    }
    switch (p.cmd) {
      case 'publish':
        return this.onPublish(p);
      case 'puback':
        return this.onPuback(p.messageId ?? 0);
      case 'subscribe':
        return this.onSubscribe(p);
      case 'unsubscribe':
        return this.onUnsubscribe(p);
      case 'pingreq':
        return this.send({ cmd: 'pingresp' });
      case 'disconnect': {
        const withWill = this.version === 5 && p.reasonCode === 0x04;
        if (!withWill) this.will = undefined;
        this.closeWith('CLIENT_INITIATED_DISCONNECT');
        return;
      }
      case 'connect':
        this.log('protocol.error', 'a second CONNECT on the same connection; connection closed');
        return this.violation(RC.protocolError, 'CLIENT_ERROR');
      case 'pubrec':
      case 'pubrel':
      case 'pubcomp':
        this.log(
          'protocol.error',
          `${p.cmd.toUpperCase()} belongs to QoS 2, which AWS IoT does not support; connection closed`,
        );
        return this.violation(RC.qosNotSupported, 'CLIENT_ERROR');
      default:
        this.log('protocol.error', `unexpected ${p.cmd.toUpperCase()} from a client; connection closed`);
        return this.violation(RC.protocolError, 'CLIENT_ERROR');
    }
  }

  // ---- CONNECT ----

  private onConnect(p: IConnectPacket): void {
    clearTimeout(this.connectTimer);
    const version = p.protocolVersion;
    if (version !== 4 && version !== 5) {
      this.log(
        'connect.refused',
        `MQTT protocol level ${version} is not supported (AWS IoT speaks 3.1.1 and 5)`,
      );
      this.version = 4;
      this.send({ cmd: 'connack', returnCode: 1, sessionPresent: false });
      return this.end();
    }
    this.version = version;
    this.parser = mqtt.parser({ protocolVersion: version });
    let clientId = p.clientId ?? '';
    let assigned = false;
    if (!clientId) {
      clientId = `provline-${randomUUID()}`;
      assigned = true;
    }
    this.clientId = clientId;
    if (Buffer.byteLength(clientId) > MAX_CLIENT_ID_BYTES) {
      this.log(
        'connect.refused',
        `the client id is ${Buffer.byteLength(clientId)} bytes; AWS IoT allows at most ${MAX_CLIENT_ID_BYTES}`,
      );
      return this.refuseConnect(version === 5 ? RC.badClientId : 2, true);
    }
    const auth = this.auth;
    if (auth.kind === 'refused') {
      this.log('connect.refused', auth.reason);
      return this.refuseConnect(RC.notAuthorized, false);
    }
    if (auth.kind === 'jit') {
      justInTime(this.broker.jitDeps, {
        ca: auth.ca,
        certificateId: auth.certificateId,
        leaf: auth.leaf,
        clientId,
        ...(auth.existing ? { existing: auth.existing } : {}),
      });
      return this.end();
    }
    const decision = this.broker.authorize(this, 'iot:Connect', `client/${clientId}`);
    if (!decision.allowed) {
      this.log('connect.denied', decision.reason, { details: { action: 'iot:Connect' } });
      return this.refuseConnect(RC.notAuthorized, false);
    }
    if (p.will) {
      const problem = topicProblem(p.will.topic, 'name');
      if (problem) {
        this.log('connect.refused', `the will message is invalid: ${problem}`);
        return this.refuseConnect(version === 5 ? RC.topicNameInvalid : 2, true);
      }
      this.will = {
        topic: p.will.topic,
        payload: Buffer.from(p.will.payload),
        qos: p.will.qos === 0 ? 0 : 1,
        retain: p.will.retain ?? false,
        origin: clientId,
        ...(version === 5 && p.will.properties ? { properties: pickProperties(p.will.properties) } : {}),
      };
    }
    const props = p.properties ?? {};
    if (version === 5) {
      if (props.receiveMaximum) this.receiveMaximum = Math.min(props.receiveMaximum, MAX_INFLIGHT);
      if (props.maximumPacketSize) this.clientMaxPacket = props.maximumPacketSize;
    }
    const requested = p.keepalive ?? 0;
    const keepAlive = this.broker.keepAlive(requested);
    const expiry =
      version === 5
        ? this.broker.sessionExpiry(props.sessionExpiryInterval ?? 0)
        : p.clean === false
          ? this.broker.sessionExpiry(undefined)
          : 0;
    const { session, present } = this.broker.attach(this, {
      clean: p.clean !== false,
      expirySeconds: expiry,
    });
    this.session = session;
    const connack: Record<string, unknown> = { cmd: 'connack', sessionPresent: present };
    if (version === 5) {
      connack.reasonCode = 0;
      connack.properties = {
        maximumQoS: 1,
        retainAvailable: true,
        maximumPacketSize: ANNOUNCED_MAX_PACKET,
        topicAliasMaximum: TOPIC_ALIAS_MAXIMUM,
        receiveMaximum: MAX_INFLIGHT,
        wildcardSubscriptionAvailable: true,
        subscriptionIdentifiersAvailable: false,
        sharedSubscriptionAvailable: false,
        ...(keepAlive !== requested ? { serverKeepAlive: keepAlive } : {}),
        ...(assigned ? { assignedClientIdentifier: clientId } : {}),
        ...((props.sessionExpiryInterval ?? 0) !== expiry ? { sessionExpiryInterval: expiry } : {}),
      };
    } else connack.returnCode = 0;
    this.send(connack as unknown as Packet);
    this.accepted = true;
    this.keepAliveTimer = setTimeout(() => this.keepAliveExpired(keepAlive), keepAlive * 1500);
    this.keepAliveTimer.unref();
    this.presence = {
      clientId,
      timestampMs: this.broker.nowMs(),
      sessionIdentifier: randomUUID(),
      principalIdentifier: auth.cert.certificateId,
      ipAddress: this.socket.remoteAddress ?? '127.0.0.1',
      versionNumber: this.broker.nextPresenceVersion(clientId),
    };
    this.log(
      'connect.accepted',
      `connected with MQTT ${version === 5 ? '5' : '3.1.1'}, keep-alive ${keepAlive} s, ${expiry ? `persistent session (expiry ${expiry} s${present ? ', resumed' : ''})` : 'clean session'}; ${decision.reason}`,
    );
    this.broker.presenceConnected(this.presence);
    this.broker.resume(this);
  }

  private refuseConnect(code: number, sendAlways: boolean): void {
    // 3.1.1: AWS closes without CONNACK (the device sees a hang-up); MQTT 5: CONNACK + reason.
    if (this.version === 5)
      this.send({ cmd: 'connack', reasonCode: code, sessionPresent: false } as unknown as Packet);
    else if (sendAlways) this.send({ cmd: 'connack', returnCode: code, sessionPresent: false });
    this.end();
  }

  private keepAliveExpired(keepAlive: number): void {
    this.log('disconnect', `no packet within 1.5 × keep-alive (${keepAlive * 1.5} s); connection closed`);
    this.closeWith('MQTT_KEEP_ALIVE_TIMEOUT', RC.keepAliveTimeout);
  }

  // ---- PUBLISH in ----

  private onPublish(p: IPublishPacket): void {
    let topic = p.topic;
    const alias = p.properties?.topicAlias;
    if (this.version === 5 && alias !== undefined) {
      if (alias < 1 || alias > TOPIC_ALIAS_MAXIMUM) {
        this.log(
          'publish.refused',
          `topic alias ${alias} is outside 1..${TOPIC_ALIAS_MAXIMUM}; connection closed`,
        );
        return this.violation(RC.topicAliasInvalid, 'CLIENT_ERROR');
      }
      if (topic) this.aliases.set(alias, topic);
      else {
        const known = this.aliases.get(alias);
        if (!known) {
          this.log('publish.refused', `topic alias ${alias} was never set; connection closed`);
          return this.violation(RC.protocolError, 'CLIENT_ERROR');
        }
        topic = known;
      }
    }
    if (p.qos === 2) {
      this.log(
        'publish.refused',
        `QoS 2 PUBLISH on ${topic}: AWS IoT supports QoS 0 and 1 only (no PUBACK); connection closed`,
        { topic },
      );
      return this.violation(RC.qosNotSupported, 'CLIENT_ERROR');
    }
    const payload = typeof p.payload === 'string' ? Buffer.from(p.payload) : p.payload;
    if (payload.length > MAX_PAYLOAD_BYTES) {
      this.log(
        'publish.refused',
        `payload of ${payload.length} bytes on ${topic} exceeds AWS IoT's ${MAX_PAYLOAD_BYTES}-byte limit (PAYLOAD_LIMIT_EXCEEDED); connection closed`,
        { topic },
      );
      return this.violation(RC.packetTooLarge, 'CLIENT_ERROR');
    }
    const problem = topicProblem(topic, 'name');
    if (problem) {
      this.log('publish.refused', `${problem}; connection closed`, { topic });
      return this.violation(RC.topicNameInvalid, 'CLIENT_ERROR');
    }
    if (topic.startsWith('$aws/events/')) {
      this.log(
        'publish.denied',
        `${topic} is a reserved topic only AWS IoT publishes to; connection closed`,
        { topic },
      );
      return this.deniedPublish(p, topic);
    }
    const decision = this.broker.authorize(this, 'iot:Publish', `topic/${topic}`);
    if (!decision.allowed) {
      this.log('publish.denied', decision.reason, { topic, details: { action: 'iot:Publish' } });
      return this.deniedPublish(p, topic);
    }
    if (p.retain) {
      const retain = this.broker.authorize(this, 'iot:RetainPublish', `topic/${topic}`);
      if (!retain.allowed) {
        this.log(
          'publish.denied',
          `${retain.reason} (a retained PUBLISH needs iot:RetainPublish as well as iot:Publish)`,
          { topic, details: { action: 'iot:RetainPublish' } },
        );
        return this.deniedPublish(p, topic);
      }
    }
    if (p.qos === 1) this.send({ cmd: 'puback', messageId: p.messageId ?? 0 });
    const message: Message = {
      topic,
      payload,
      qos: p.qos,
      retain: p.retain,
      origin: this.clientId,
      ...(this.version === 5 && p.properties ? { properties: pickProperties(p.properties) } : {}),
    };
    this.broker.publishFromClient(this, message);
  }

  private deniedPublish(p: IPublishPacket, _topic: string): void {
    if (this.version === 5 && p.qos === 1) {
      this.send({ cmd: 'puback', messageId: p.messageId ?? 0, reasonCode: RC.notAuthorized });
      return;
    }
    this.violation(RC.notAuthorized, 'FORBIDDEN_ACCESS');
  }

  // ---- SUBSCRIBE / UNSUBSCRIBE ----

  private onSubscribe(p: ISubscribePacket): void {
    const session = this.session!;
    const subs = p.subscriptions;
    if (this.version === 4 && subs.some((s) => s.qos === 2)) {
      this.log(
        'subscribe.refused',
        `SUBSCRIBE asks QoS 2 for ${subs
          .filter((s) => s.qos === 2)
          .map((s) => s.topic)
          .join(', ')}; AWS IoT sends no SUBACK for QoS 2 (the client waits)`,
      );
      return;
    }
    if (subs.length > MAX_FILTERS_PER_SUBSCRIBE) {
      this.log(
        'subscribe.refused',
        `SUBSCRIBE carries ${subs.length} filters; AWS IoT allows at most ${MAX_FILTERS_PER_SUBSCRIBE} per packet`,
      );
      this.send({
        cmd: 'suback',
        messageId: p.messageId,
        granted: subs.map(() => (this.version === 5 ? RC.quotaExceeded : 0x80)),
      });
      return;
    }
    const granted: number[] = [];
    const added: Array<{ filter: string; qos: 0 | 1 }> = [];
    for (const s of subs) {
      const filter = s.topic;
      const problem = filter.startsWith('$share/')
        ? 'shared subscriptions are not emulated'
        : topicProblem(filter, 'filter');
      if (problem) {
        this.log('subscribe.refused', `${filter}: ${problem}`, { topic: filter });
        granted.push(
          this.version === 5
            ? filter.startsWith('$share/')
              ? RC.sharedNotSupported
              : RC.topicFilterInvalid
            : 0x80,
        );
        continue;
      }
      const decision = this.broker.authorize(this, 'iot:Subscribe', `topicfilter/${filter}`);
      if (!decision.allowed) {
        this.log('subscribe.denied', decision.reason, {
          topic: filter,
          details: { action: 'iot:Subscribe' },
        });
        if (this.version === 4) {
          // AWS drops a 3.1.1 client that subscribes outside its policy (no SUBACK).
          return this.violation(RC.notAuthorized, 'FORBIDDEN_ACCESS');
        }
        granted.push(RC.notAuthorized);
        continue;
      }
      if (
        !session.subscriptions.has(filter) &&
        session.subscriptions.size >= MAX_SUBSCRIPTIONS_PER_CONNECTION
      ) {
        this.log(
          'subscribe.refused',
          `${filter}: the connection already has ${MAX_SUBSCRIPTIONS_PER_CONNECTION} subscriptions (AWS IoT's quota)`,
          { topic: filter },
        );
        granted.push(this.version === 5 ? RC.quotaExceeded : 0x80);
        continue;
      }
      const qos: 0 | 1 = s.qos === 0 ? 0 : 1;
      granted.push(qos);
      added.push({ filter, qos });
      this.broker.subscribe(session, filter, { qos, noLocal: s.nl === true });
    }
    this.send({ cmd: 'suback', messageId: p.messageId, granted });
    for (const a of added) this.broker.deliverRetained(this, a.filter, a.qos);
  }

  private onUnsubscribe(p: IUnsubscribePacket): void {
    const codes = p.unsubscriptions.map((f) =>
      this.broker.unsubscribe(this.session!, f) ? RC.success : RC.noSubscriptionExisted,
    );
    this.send(
      (this.version === 5
        ? { cmd: 'unsuback', messageId: p.messageId, granted: codes }
        : { cmd: 'unsuback', messageId: p.messageId }) as Packet,
    );
  }

  // ---- PUBLISH out ----

  /** True when the message was written or queued; QoS 1 waits for PUBACK. */
  deliver(message: Message, qos: 0 | 1): void {
    if (this.closed) return;
    if (qos === 1 && this.inflight.size >= this.receiveMaximum) {
      this.session!.queue.push({ ...message, qos });
      return;
    }
    const packet: Record<string, unknown> = {
      cmd: 'publish',
      topic: message.topic,
      payload: message.payload,
      qos,
      dup: false,
      retain: message.retainedDelivery === true,
    };
    if (qos === 1) {
      const id = this.packetId();
      packet.messageId = id;
      this.inflight.set(id, { ...message, qos });
    }
    if (this.version === 5 && message.properties) packet.properties = message.properties;
    this.send(packet as unknown as Packet, true);
  }

  private packetId(): number {
    for (;;) {
      const id = this.nextId;
      this.nextId = this.nextId >= 65535 ? 1 : this.nextId + 1;
      if (!this.inflight.has(id)) return id;
    }
  }

  private onPuback(id: number): void {
    this.inflight.delete(id);
    const session = this.session;
    while (session && session.queue.length && this.inflight.size < this.receiveMaximum) {
      const next = session.queue.shift()!;
      this.broker.deliverQueued(this, next);
    }
  }

  /** Unacknowledged QoS 1 messages (kept by a persistent session when the connection ends). */
  takeInflight(): Message[] {
    const out = [...this.inflight.values()];
    this.inflight.clear();
    return out;
  }

  // ---- bytes out, closing ----

  private send(packet: Packet, outbound = false): void {
    if (this.closed || this.socket.destroyed) return;
    let buf: Buffer;
    try {
      buf = mqtt.generate(packet, { protocolVersion: this.version ?? 4 });
    } catch (e) {
      this.log('protocol.error', `could not encode ${packet.cmd}: ${(e as Error).message}`);
      return;
    }
    if (outbound && buf.length > this.clientMaxPacket) {
      this.log(
        'deliver.dropped',
        `a ${buf.length}-byte PUBLISH exceeds the client's Maximum Packet Size ${this.clientMaxPacket}`,
      );
      return;
    }
    this.socket.write(buf);
  }

  /** A protocol or policy violation: MQTT 5 gets DISCONNECT with the reason, 3.1.1 a close. */
  private violation(code: number, reason: DisconnectReason): void {
    this.closeWith(reason, code);
  }

  /** Server-side close of an accepted (or half-open) connection. */
  closeWith(reason: DisconnectReason, code?: number): void {
    if (this.closed) return;
    if (this.version === 5 && this.accepted && code !== undefined)
      this.send({ cmd: 'disconnect', reasonCode: code });
    this.finish(reason);
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  /** Another connection took over the client id. */
  kick(): void {
    this.log(
      'disconnect',
      `another connection with client id ${this.clientId} connected; this one is dropped (DUPLICATE_CLIENTID)`,
    );
    this.closeWith('DUPLICATE_CLIENTID', RC.sessionTakenOver);
  }

  /** Graceful close without an MQTT reply (refused CONNECT, JIT first connect). */
  private end(): void {
    if (this.closed) return;
    this.finish('SERVER_INITIATED_DISCONNECT');
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  private drop(reason: DisconnectReason, halfClose: boolean): void {
    if (this.closed) return;
    this.finish(reason);
    if (halfClose) this.socket.end();
  }

  /** Tears the connection's broker state down, once. */
  private finish(reason: DisconnectReason): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.connectTimer);
    clearTimeout(this.keepAliveTimer);
    if (this.accepted) this.broker.detach(this, reason, this.presence!, this.will);
  }
}

/** The MQTT 5 PUBLISH properties that travel with a message. */
function pickProperties(p: NonNullable<IPublishPacket['properties']>): Message['properties'] {
  const out: NonNullable<Message['properties']> = {};
  if (p.payloadFormatIndicator !== undefined) out.payloadFormatIndicator = p.payloadFormatIndicator;
  if (p.messageExpiryInterval !== undefined) out.messageExpiryInterval = p.messageExpiryInterval;
  if (p.contentType !== undefined) out.contentType = p.contentType;
  if (p.responseTopic !== undefined) out.responseTopic = p.responseTopic;
  if (p.correlationData !== undefined) out.correlationData = p.correlationData;
  if (p.userProperties !== undefined) out.userProperties = p.userProperties;
  return out;
}
