/**
 * Bad input on the MQTT endpoint never crashes the stand-in: malformed and truncated packets,
 * a PUBLISH before CONNECT, payloads over AWS's 128 KiB limit, wildcards in a PUBLISH topic,
 * QoS 2; then a property test feeds random bytes and checks a good client is still served.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import fc from 'fast-check';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/home.js';
import {
  ALLOW_ALL,
  makeDevice,
  sdk5,
  startStandIn,
  uniq,
  waitEvent,
  type Device,
  type StandIn,
} from './mqtt-helpers.js';

let s: StandIn;
let dir: string;
let dev: Device;

beforeAll(async () => {
  dir = tempDir('provline-mqtt-bad-');
  s = await startStandIn(join(dir, 'state'));
  dev = await makeDevice(s, dir, ALLOW_ALL);
});

afterAll(async () => {
  await s?.stop();
});

/**
 * Opens mTLS, writes `chunks`, and returns what the server sent until it closed, `until` held,
 * or `budgetMs` passed (then the client closes).
 */
function raw(
  chunks: Buffer[],
  version: 4 | 5 = 5,
  opts: { budgetMs?: number; until?: (p: Packet[]) => boolean } = {},
): Promise<{ packets: Packet[]; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const sock = tlsConnect({
      host: s.host,
      port: s.port,
      ca: readFileSync(s.rootCaFile),
      cert: dev.certPem,
      key: dev.keyPem,
      servername: s.host,
    });
    const packets: Packet[] = [];
    const parser = mqttPacket.parser({ protocolVersion: version });
    parser.on('packet', (p: Packet) => {
      packets.push(p);
      if (opts.until?.(packets)) sock.end();
    });
    parser.on('error', () => undefined);
    sock.on('data', (d: Buffer) => parser.parse(d));
    const timer = setTimeout(() => {
      sock.destroy();
      resolve({ packets, closed: false });
    }, opts.budgetMs ?? 5000);
    sock.once('secureConnect', () => {
      for (const c of chunks) sock.write(c);
    });
    sock.once('close', () => {
      clearTimeout(timer);
      resolve({ packets, closed: true });
    });
    sock.once('error', (e: Error) => (e.message.includes('ECONNRESET') ? undefined : reject(e)));
  });
}

const connect = (clientId: string, protocolVersion: 4 | 5 = 5): Buffer =>
  mqttPacket.generate(
    { cmd: 'connect', clientId, protocolVersion, protocolId: 'MQTT', clean: true, keepalive: 60 },
    { protocolVersion },
  );

const publish = (topic: string, payload: Buffer, qos: 0 | 1 | 2 = 1, protocolVersion: 4 | 5 = 5): Buffer =>
  mqttPacket.generate(
    { cmd: 'publish', topic, payload, qos, dup: false, retain: false, messageId: 7 },
    { protocolVersion },
  );

describe('bad input on the MQTT endpoint', () => {
  it('a PUBLISH before CONNECT is closed, with the reason logged', async () => {
    const r = await raw([publish('a/b', Buffer.from('x'), 0, 4)], 4);
    expect(r.closed).toBe(true);
    expect(r.packets).toEqual([]);
    await waitEvent(s, (e) => e.kind === 'protocol.error' && /first packet was PUBLISH/.test(e.reason));
  });

  it('a malformed CONNECT (bad protocol name) and a truncated packet are dropped', async () => {
    const bad = connect('x', 4);
    bad[4] = 0x58; // 'MQTT' -> 'XQTT'
    expect((await raw([bad], 4)).closed).toBe(true);
    await waitEvent(s, (e) => e.kind === 'protocol.error' && /malformed/.test(e.reason));
    const truncated = connect(uniq('trunc')).subarray(0, 9);
    const r = await raw([truncated], 5, { budgetMs: 500 });
    expect(r.packets).toEqual([]);
  });

  it('a payload over 128 KiB: MQTT 5 DISCONNECT 0x95 and PAYLOAD_LIMIT_EXCEEDED in the log', async () => {
    const clientId = uniq('big');
    const r = await raw([connect(clientId), publish('big/x', Buffer.alloc(128 * 1024 + 1, 0x61))]);
    expect(r.packets.map((p) => p.cmd)).toEqual(['connack', 'disconnect']);
    expect((r.packets[1] as { reasonCode?: number }).reasonCode).toBe(0x95);
    const e = await waitEvent(s, (x) => x.kind === 'publish.refused' && x.clientId === clientId);
    expect(e.reason).toMatch(/131073 bytes on big\/x exceeds AWS IoT's 131072-byte limit/);
  });

  it('exactly 128 KiB is accepted', async () => {
    const r = await raw([connect(uniq('edge')), publish('big/edge', Buffer.alloc(128 * 1024, 0x62))], 5, {
      until: (p) => p.length === 2,
    });
    expect(r.packets.map((p) => p.cmd)).toEqual(['connack', 'puback']);
  });

  it('wildcards in a PUBLISH topic and QoS 2 end the connection with reason codes', async () => {
    const wild = uniq('wild');
    const w = await raw([connect(wild), publish('a/+/b', Buffer.from('x'))]);
    expect(w.packets.map((p) => (p.cmd === 'disconnect' ? p.reasonCode : p.cmd))).toEqual(['connack', 0x90]);
    await waitEvent(
      s,
      (x) => x.kind === 'publish.refused' && x.clientId === wild && /wildcards/.test(x.reason),
    );
    const q2 = uniq('qos2');
    const q = await raw([connect(q2), publish('a/b', Buffer.from('x'), 2)]);
    expect(q.packets.map((p) => (p.cmd === 'disconnect' ? p.reasonCode : p.cmd))).toEqual(['connack', 0x9b]);
    await waitEvent(s, (x) => x.kind === 'publish.refused' && x.clientId === q2 && /QoS 2/.test(x.reason));
  });

  it('random bytes never crash the listener; a good client is served afterwards', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        fc.uint8Array({ minLength: 1, maxLength: 600 }),
        async (afterConnect, bytes) => {
          const chunks = afterConnect ? [connect(uniq('fuzz')), Buffer.from(bytes)] : [Buffer.from(bytes)];
          await raw(chunks, 5, { budgetMs: 300 });
        },
      ),
      { numRuns: 60 },
    );
    const health = await fetch(`${s.iotUrl}/_emulator/health`);
    expect(health.ok).toBe(true);
    const c = sdk5(s, dev, uniq('after-fuzz'));
    await c.connected;
    await c.stop();
  });
});
