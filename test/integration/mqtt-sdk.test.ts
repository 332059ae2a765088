/**
 * The data plane through the official AWS IoT Device SDK v2 (aws-crt): MQTT 5 and 3.1.1
 * clients connect with CreateKeysAndCertificate credentials, publish and subscribe, see
 * lifecycle events, and DescribeEndpoint iot:Data-ATS names the endpoint they use.
 */
import { DescribeEndpointCommand } from '@aws-sdk/client-iot';
import { mqtt } from 'aws-iot-device-sdk-v2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/home.js';
import {
  ALLOW_ALL,
  makeDevice,
  sdk311,
  sdk5,
  startStandIn,
  topicPolicy,
  uniq,
  waitEvent,
  type StandIn,
} from './mqtt-helpers.js';

let s: StandIn;
let dir: string;

beforeAll(async () => {
  dir = tempDir('provline-mqtt-sdk-');
  s = await startStandIn(`${dir}/state`);
});

afterAll(async () => {
  await s?.stop();
});

describe('the official device SDK against the stand-in', () => {
  it('DescribeEndpoint iot:Data-ATS names the MQTT endpoint (localhost:<port>)', async () => {
    const out = await s.iot.send(new DescribeEndpointCommand({ endpointType: 'iot:Data-ATS' }));
    expect(out.endpointAddress).toBe(s.mqttEndpoint);
    expect(out.endpointAddress).toMatch(/^localhost:\d+$/);
  });

  it('MQTT 5: connects with an ACTIVE certificate, subscribes, publishes and receives', async () => {
    const dev = await makeDevice(s, dir, topicPolicy('sdk5'));
    const c = sdk5(s, dev, uniq('sdk5'));
    const connack = await c.connected;
    expect(connack?.reasonCode).toBe(0);
    expect(connack?.maximumQos).toBe(1);
    const topic = `sdk5/${uniq('t')}`;
    const suback = await c.client.subscribe({ subscriptions: [{ topicFilter: 'sdk5/+', qos: 1 }] });
    expect(suback.reasonCodes).toEqual([1]);
    const puback = await c.client.publish({ topicName: topic, qos: 1, payload: Buffer.from('hello') });
    expect(puback?.reasonCode ?? 0).toBe(0);
    expect(await c.waitMessage(topic)).toBe('hello');
    await c.stop();
  });

  it('MQTT 3.1.1: connects, subscribes, publishes and receives', async () => {
    const dev = await makeDevice(s, dir, topicPolicy('sdk3'));
    const conn = sdk311(s, dev, uniq('sdk3'));
    const sessionPresent = await conn.connect();
    expect(sessionPresent).toBe(false);
    const topic = `sdk3/${uniq('t')}`;
    const got = new Promise<string>((resolve) => {
      void conn.subscribe('sdk3/#', mqtt.QoS.AtLeastOnce, (_t, payload) =>
        resolve(Buffer.from(payload).toString()),
      );
    });
    await new Promise((r) => setTimeout(r, 0));
    await conn.publish(topic, 'from 3.1.1', mqtt.QoS.AtLeastOnce);
    expect(await got).toBe('from 3.1.1');
    await conn.disconnect();
  });

  it("a watcher allowed $aws/events sees a device's connect and disconnect (lifecycle events)", async () => {
    const watcher = await makeDevice(s, dir, ALLOW_ALL);
    const w = sdk5(s, watcher, uniq('watcher'));
    await w.connected;
    await w.client.subscribe({ subscriptions: [{ topicFilter: '$aws/events/presence/+/+', qos: 1 }] });
    const dev = await makeDevice(s, dir, topicPolicy('life'));
    const clientId = uniq('device');
    const d = sdk5(s, dev, clientId);
    await d.connected;
    const connected = JSON.parse(await w.waitMessage(`$aws/events/presence/connected/${clientId}`)) as Record<
      string,
      unknown
    >;
    expect(connected).toMatchObject({
      clientId,
      eventType: 'connected',
      principalIdentifier: dev.certificateId,
      versionNumber: 0,
    });
    expect(typeof connected.timestamp).toBe('number');
    expect(typeof connected.sessionIdentifier).toBe('string');
    expect(connected.ipAddress).toBe('127.0.0.1');
    await d.stop();
    const gone = JSON.parse(await w.waitMessage(`$aws/events/presence/disconnected/${clientId}`)) as Record<
      string,
      unknown
    >;
    expect(gone).toMatchObject({
      clientId,
      eventType: 'disconnected',
      clientInitiatedDisconnect: true,
      disconnectReason: 'CLIENT_INITIATED_DISCONNECT',
      sessionIdentifier: connected.sessionIdentifier,
    });
    await w.stop();
    await waitEvent(s, (e) => e.kind === 'connect.accepted' && e.clientId === clientId);
  });
});
