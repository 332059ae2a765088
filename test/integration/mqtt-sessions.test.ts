/**
 * Broker semantics with a raw mqtt-packet client over mutual TLS, against the stand-in started
 * in-process (so the keep-alive bounds can be lowered for the test): keep-alive timeout,
 * persistent sessions keeping subscriptions and QoS 1 messages, retained messages.
 */
import { join } from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { readFileSync } from 'node:fs';
import {
  AttachPolicyCommand,
  CreateKeysAndCertificateCommand,
  CreatePolicyCommand,
  type IoTClient,
} from '@aws-sdk/client-iot';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmulator, type Emulator } from '../../emulator/server.js';
import { tempDir } from '../helpers/home.js';
import { KEY, SECRET, iotClient } from './emulator-helpers.js';
import { ALLOW_ALL, uniq } from './mqtt-helpers.js';

let emu: Emulator;
let iot: IoTClient;
let cert: { certPem: string; keyPem: string };

beforeAll(async () => {
  const dir = tempDir('provline-mqtt-sess-');
  emu = await startEmulator({
    stateDir: join(dir, 'state'),
    credentials: [{ accessKeyId: KEY, secretAccessKey: SECRET }],
    mqttKeepAlive: { min: 1, max: 1200 },
    log: () => undefined,
  });
  iot = iotClient(emu.iotUrl);
  const c = await iot.send(new CreateKeysAndCertificateCommand({ setAsActive: true }));
  await iot.send(new CreatePolicyCommand({ policyName: 'all', policyDocument: JSON.stringify(ALLOW_ALL) }));
  await iot.send(new AttachPolicyCommand({ policyName: 'all', target: c.certificateArn! }));
  cert = { certPem: c.certificatePem!, keyPem: c.keyPair!.PrivateKey! };
});

afterAll(async () => {
  await emu?.close();
});

/** A raw MQTT client: packets in arrival order, waits with a per-step budget. */
class Raw {
  readonly packets: Packet[] = [];
  closed = false;
  private waiters: Array<() => void> = [];
  private readonly sock: TLSSocket;

  constructor(readonly version: 4 | 5) {
    this.sock = tlsConnect({
      host: '127.0.0.1',
      port: emu.mqttPort,
      ca: readFileSync(emu.rootCaFile),
      cert: cert.certPem,
      key: cert.keyPem,
      servername: 'localhost',
    });
    const parser = mqttPacket.parser({ protocolVersion: version });
    parser.on('packet', (p: Packet) => {
      this.packets.push(p);
      this.wake();
    });
    this.sock.on('data', (d: Buffer) => parser.parse(d));
    this.sock.on('close', () => {
      this.closed = true;
      this.wake();
    });
    this.sock.on('error', () => undefined);
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  send(p: Record<string, unknown>): void {
    this.sock.write(mqttPacket.generate(p as unknown as Packet, { protocolVersion: this.version }));
  }

  async until<T>(pick: () => T | undefined, what: string, budgetMs = 10_000): Promise<T> {
    const deadline = Date.now() + budgetMs;
    for (;;) {
      const v = pick();
      if (v !== undefined) return v;
      if (Date.now() > deadline)
        throw new Error(
          `timed out waiting for ${what}; got ${JSON.stringify(this.packets.map((p) => p.cmd))}`,
        );
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 100);
      });
    }
  }

  packet(cmd: string): Promise<Packet> {
    return this.until(() => this.packets.find((p) => p.cmd === cmd), cmd);
  }

  end(): void {
    this.sock.end();
  }
}

const connect = (
  clientId: string,
  clean: boolean,
  keepalive = 60,
  extra: Record<string, unknown> = {},
): Record<string, unknown> => ({
  cmd: 'connect',
  protocolId: 'MQTT',
  clientId,
  clean,
  keepalive,
  ...extra,
});

describe('broker semantics', () => {
  it('no packet within 1.5 × keep-alive: MQTT 5 DISCONNECT 0x8D, MQTT_KEEP_ALIVE_TIMEOUT', async () => {
    const clientId = uniq('ka');
    const c = new Raw(5);
    c.send({ ...connect(clientId, true, 1), protocolVersion: 5 });
    await c.packet('connack');
    const started = Date.now();
    const d = (await c.packet('disconnect')) as { reasonCode?: number };
    expect(d.reasonCode).toBe(0x8d);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
    const log = emu.events.query({ clientId }).events;
    expect(log.some((e) => e.kind === 'disconnect' && /MQTT_KEEP_ALIVE_TIMEOUT/.test(e.reason))).toBe(true);
  });

  it('a persistent 3.1.1 session keeps its subscription and the QoS 1 messages sent while away', async () => {
    const clientId = uniq('persist');
    const topic = `persist/${uniq('t')}`;
    const a = new Raw(4);
    a.send({ ...connect(clientId, false), protocolVersion: 4 });
    expect((await a.packet('connack')) as { sessionPresent: boolean }).toMatchObject({
      sessionPresent: false,
    });
    a.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] });
    await a.packet('suback');
    a.send({ cmd: 'disconnect' });
    await a.until(() => (a.closed ? true : undefined), 'close');
    const p = new Raw(4);
    p.send({ ...connect(uniq('pub'), true), protocolVersion: 4 });
    await p.packet('connack');
    p.send({
      cmd: 'publish',
      topic,
      payload: Buffer.from('while away'),
      qos: 1,
      messageId: 9,
      retain: false,
      dup: false,
    });
    await p.packet('puback');
    p.end();
    const b = new Raw(4);
    b.send({ ...connect(clientId, false), protocolVersion: 4 });
    expect((await b.packet('connack')) as { sessionPresent: boolean }).toMatchObject({
      sessionPresent: true,
    });
    const msg = (await b.packet('publish')) as {
      topic: string;
      payload: Buffer;
      qos: number;
      messageId: number;
    };
    expect([msg.topic, msg.payload.toString(), msg.qos]).toEqual([topic, 'while away', 1]);
    b.send({ cmd: 'puback', messageId: msg.messageId });
    // A clean session discards it.
    b.send({ cmd: 'disconnect' });
    await b.until(() => (b.closed ? true : undefined), 'close');
    const c = new Raw(4);
    c.send({ ...connect(clientId, true), protocolVersion: 4 });
    expect((await c.packet('connack')) as { sessionPresent: boolean }).toMatchObject({
      sessionPresent: false,
    });
    c.end();
  });

  it('a retained message reaches a later subscriber with RETAIN set; an empty one clears it', async () => {
    const topic = `retained/${uniq('t')}`;
    const p = new Raw(5);
    p.send({ ...connect(uniq('rp'), true), protocolVersion: 5 });
    await p.packet('connack');
    p.send({
      cmd: 'publish',
      topic,
      payload: Buffer.from('last value'),
      qos: 1,
      messageId: 3,
      retain: true,
      dup: false,
    });
    await p.packet('puback');
    const s1 = new Raw(5);
    s1.send({ ...connect(uniq('rs'), true), protocolVersion: 5 });
    await s1.packet('connack');
    s1.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'retained/#', qos: 1 }] });
    const got = (await s1.packet('publish')) as { topic: string; payload: Buffer; retain: boolean };
    expect([got.topic, got.payload.toString(), got.retain]).toEqual([topic, 'last value', true]);
    s1.end();
    p.send({
      cmd: 'publish',
      topic,
      payload: Buffer.alloc(0),
      qos: 1,
      messageId: 4,
      retain: true,
      dup: false,
    });
    await p.until(
      () => (p.packets.filter((x) => x.cmd === 'puback').length === 2 ? true : undefined),
      'second puback',
    );
    const s2 = new Raw(5);
    s2.send({ ...connect(uniq('rs2'), true), protocolVersion: 5 });
    await s2.packet('connack');
    s2.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] });
    await s2.packet('suback');
    // A marker published after the SUBSCRIBE arrives; nothing retained came before it.
    p.send({
      cmd: 'publish',
      topic,
      payload: Buffer.from('marker'),
      qos: 1,
      messageId: 5,
      retain: false,
      dup: false,
    });
    const first = (await s2.packet('publish')) as { payload: Buffer };
    expect(first.payload.toString()).toBe('marker');
    s2.end();
    p.end();
  });
});
