/**
 * The two sides of each device protocol against the document and against each other, without a
 * serial link: the station's codecs (src/flash/protocol) and the simulators' own (devices/) are
 * written separately, so each catches what the other gets wrong. The serial-v1 frames come from
 * the worked-frames table of docs/device-protocol.md (§2.1); the AT lines from the examples of
 * the nRF91 reference.
 */
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { NordicModemModel, SerialV1Model } from '../../devices/index.js';
import { CommandLines, answer, credentialDigest, parseCommand } from '../../devices/nordic-at-wire.js';
import {
  ConnectOutcome,
  Fields,
  FrameReceiver,
  crc32IsoHdlc,
  frameBytes,
  readFrame,
  put,
  type Received,
} from '../../devices/serial-v1-wire.js';
import {
  AtResponseReader,
  FrameDecoder,
  NAK,
  PayloadReader,
  cmngWriteCommand,
  connectPayload,
  crc32,
  decodeFrame,
  encodeFrame,
  normalizePem,
  parseCmngList,
  parseImei,
  parseMqttEvent,
  readConnectAttempts,
  mqttConnectCommand,
  sha256Upper,
  type AtResponse,
} from '../../src/flash/protocol/index.js';
import { ROOT } from '../helpers/cli.js';

const DOC = readFileSync(join(ROOT, 'docs/device-protocol.md'), 'utf8');

interface Vector {
  from: 'station' | 'device';
  what: string;
  type: number;
  seq: number;
  payload: Buffer;
  frame: Buffer;
}

const hex = (cell: string): Buffer => Buffer.from(cell.replace(/[`–\s]/g, ''), 'hex');

/** The rows of the worked-frames table. */
function docVectors(): Vector[] {
  const start = DOC.indexOf('### 2.1 Worked frames');
  const end = DOC.indexOf('\n## ', start);
  expect(start).toBeGreaterThan(0);
  return DOC.slice(start, end)
    .split('\n')
    .filter((l) => /^\| (station|device) \|/.test(l))
    .map((line) => {
      const [from, what, type, seq, payload, frame] = line
        .split('|')
        .slice(1, -1)
        .map((c) => c.trim());
      return {
        from: from as Vector['from'],
        what: what!,
        type: hex(type!)[0]!,
        seq: Number(seq),
        payload: hex(payload!),
        frame: hex(frame!),
      };
    });
}

const byWhat = (vectors: Vector[], prefix: string): Vector => {
  const v = vectors.find((x) => x.what.startsWith(prefix));
  if (!v) throw new Error(`no worked frame "${prefix}" in docs/device-protocol.md`);
  return v;
};

/** The same frame with one bit of its CRC flipped. */
const damaged = (frame: Buffer): Buffer => {
  const out = Buffer.from(frame);
  out[out.length - 1] = out[out.length - 1]! ^ 0x01;
  return out;
};

const oneByteAtATime = (receiver: FrameReceiver, bytes: Buffer): Received[] =>
  [...bytes].flatMap((b) => receiver.push(Buffer.from([b])));

describe('provline-serial-v1: both sides against the worked frames of the document', () => {
  const vectors = docVectors();

  it('the document has the worked frames, and states the CRC check value both sides meet', () => {
    expect(vectors.length).toBeGreaterThanOrEqual(9);
    const check = /check value of `"123456789"` is 0x([0-9A-F]{8})/.exec(DOC);
    expect(check).not.toBeNull();
    const value = parseInt(check![1]!, 16);
    expect(crc32IsoHdlc(Buffer.from('123456789'))).toBe(value);
    expect(crc32(Buffer.from('123456789'))).toBe(value);
  });

  it('each frame decodes to its fields on both sides, and both encode the fields to its bytes', () => {
    for (const v of vectors) {
      const fields = { type: v.type, seq: v.seq, payload: v.payload };
      expect(readFrame(v.frame), v.what).toEqual(fields);
      expect(decodeFrame(v.frame), v.what).toEqual(fields);
      expect(frameBytes(fields).equals(v.frame), v.what).toBe(true);
      expect(encodeFrame(fields).equals(v.frame), v.what).toBe(true);
      // Streamed: the simulator byte by byte, the station in one chunk.
      const received = oneByteAtATime(new FrameReceiver(), v.frame);
      expect(
        received.map((r) => r.ok && r.frame),
        v.what,
      ).toEqual([fields]);
      const decoded = new FrameDecoder().push(v.frame);
      expect(decoded.map((e) => e.kind === 'frame' && e.frame)).toEqual([fields]);
    }
  });

  it("the simulated device answers the station's requests with exactly the document's answers", async () => {
    const device = new SerialV1Model({ serial: 'SN-0001', kek: Buffer.alloc(32, 1) });
    const ask = async (request: Buffer): Promise<Buffer> => {
      const [command, ...more] = device.split(request);
      expect(more).toEqual([]);
      return (await device.handle(command!))!;
    };
    for (const [request, answer] of [
      ['HELLO', 'OK: version 1'],
      ['IDENTITY', 'OK: `SN-0001`'],
      ['READ_HASH slot 1', 'NOT_FOUND'],
    ] as const) {
      const got = await ask(byWhat(vectors, request).frame);
      expect(got.toString('hex'), request).toBe(byWhat(vectors, answer).frame.toString('hex'));
    }
    // CHUNK at offset 512 once the first 512 bytes of a 515-byte object are in.
    const begin = frameBytes({
      type: 0x10,
      seq: 9,
      payload: Buffer.concat([Buffer.from([0, 0, 0, 2, 3]), Buffer.alloc(32)]),
    });
    const first = frameBytes({
      type: 0x11,
      seq: 10,
      payload: Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), Buffer.alloc(512, 0x41)]),
    });
    expect((await ask(begin))[6]).toBe(0); // OK
    expect((await ask(first))[6]).toBe(0);
    const chunk = await ask(byWhat(vectors, 'CHUNK').frame);
    expect(chunk.toString('hex')).toBe(byWhat(vectors, 'OK: next 515').frame.toString('hex'));
  });

  it("the station's codecs read the document's answers as the fields §4 lists", () => {
    const hello = new PayloadReader(byWhat(vectors, 'OK: version 1').payload);
    // caps 31: KEYGEN, PROVE, wrapped keys, CONNECT, FLEET
    expect([hello.u8(), hello.u8(), hello.u16(), hello.u32()]).toEqual([0, 1, 1024, 31]);
    hello.end();
    const identity = new PayloadReader(byWhat(vectors, 'OK: `SN-0001`').payload);
    expect([identity.u8(), identity.str8(), identity.str8(), identity.str8()]).toEqual([
      0,
      'SN-0001',
      'provline-sim',
      'sim-1.0.0',
    ]);
    identity.end();
    const nak = byWhat(vectors, 'NAK');
    expect(nak.type).toBe(NAK);
  });

  it("CONNECT: both sides read and write the document's example payloads (§4 First connect)", () => {
    const section = DOC.slice(DOC.indexOf('**First connect.**'), DOC.indexOf('## 5. Status codes'));
    const [request, answer] = [...section.matchAll(/`((?:[0-9a-f]{2} )+[0-9a-f]{2})`/g)].map((m) =>
      hex(m[1]!),
    );
    // The station writes the request; the device reads it.
    expect(connectPayload({ host: 'localhost', port: 8883, clientId: 'SN-0001' })).toEqual(request);
    const f = new Fields(request!);
    expect([f.text8(), f.half(), f.text8()]).toEqual(['localhost', 8883, 'SN-0001']);
    f.done();
    // The device writes the answer; the station reads it.
    const written = Buffer.concat([
      put.byte(0),
      put.byte(1),
      put.byte(ConnectOutcome.connack),
      put.byte(0),
      put.text8(''),
    ]);
    expect(written).toEqual(answer);
    const r = new PayloadReader(answer!);
    expect(r.u8()).toBe(0);
    expect(readConnectAttempts(r)).toEqual([{ outcome: 'connack', code: 0, reason: '' }]);
  });

  it('CONNECT: every attempt the device reports reaches the station in order, with its words', () => {
    const attempts = [
      { outcome: 'closed', code: 0, reason: 'the server closed the connection without CONNACK' },
      { outcome: 'closed', code: 0, reason: 'é'.repeat(60) },
      { outcome: 'connack', code: 5, reason: 'refused' },
    ] as const;
    const body = Buffer.concat([
      put.byte(attempts.length),
      ...attempts.flatMap((a) => [
        put.byte(ConnectOutcome[a.outcome]),
        put.byte(a.code),
        put.text8(a.reason),
      ]),
    ]);
    expect(readConnectAttempts(new PayloadReader(body))).toEqual(attempts);
    expect(() => readConnectAttempts(new PayloadReader(Buffer.from([1, 9, 0, 0])))).toThrow(/outcome 9/);
  });

  it('property: whatever one side frames, cut into any chunks, the other side reads back in order', () => {
    const frameArb = fc.record({
      type: fc.integer({ min: 0, max: 255 }),
      seq: fc.integer({ min: 0, max: 255 }),
      payload: fc.uint8Array({ maxLength: 1024 }).map((a) => Buffer.from(a)),
    });
    const cutArb = fc.array(fc.integer({ min: 1, max: 97 }), { minLength: 1, maxLength: 8 });
    const chunks = (stream: Buffer, cuts: number[]): Buffer[] => {
      const out: Buffer[] = [];
      for (let off = 0, i = 0; off < stream.length; i++) {
        const n = cuts[i % cuts.length]!;
        out.push(stream.subarray(off, off + n));
        off += n;
      }
      return out;
    };
    fc.assert(
      fc.property(fc.array(frameArb, { maxLength: 6 }), cutArb, (list, cuts) => {
        // station → device
        const receiver = new FrameReceiver();
        const atDevice = chunks(Buffer.concat(list.map(encodeFrame)), cuts).flatMap((c) => receiver.push(c));
        expect(atDevice.map((r) => r.ok && r.frame)).toEqual(list);
        // device → station
        const decoder = new FrameDecoder();
        const atStation = chunks(Buffer.concat(list.map(frameBytes)), cuts).flatMap((c) => decoder.push(c));
        expect(atStation.map((e) => e.kind === 'frame' && e.frame)).toEqual(list);
      }),
      { numRuns: 150 },
    );
  });

  it('a request damaged on its way to the device is NAKed with exactly the NAK of the document', async () => {
    const device = new SerialV1Model({ serial: 'SN-0001' });
    const bad = damaged(byWhat(vectors, 'HELLO').frame);
    const received = device.split(bad);
    expect(received).toHaveLength(1);
    const answer = (await device.handle(received[0]!))!;
    expect(answer.toString('hex')).toBe(byWhat(vectors, 'NAK').frame.toString('hex'));
    const events = new FrameDecoder().push(answer);
    expect(events).toMatchObject([{ kind: 'frame', frame: { type: NAK, seq: 0 } }]);
  });

  it('an answer damaged on its way from the device is caught by the station, never read', async () => {
    const device = new SerialV1Model({ serial: 'SN-0001' });
    const answer = (await device.handle(byWhat(vectors, 'IDENTITY').frame))!;
    for (let bit = 0; bit < 8; bit++) {
      // A bit flipped in the payload (the serial) and, separately, in the CRC.
      for (const at of [10, answer.length - 2]) {
        const noisy = Buffer.from(answer);
        noisy[at] = noisy[at]! ^ (1 << bit);
        const events = new FrameDecoder().push(noisy);
        expect(events.some((e) => e.kind === 'frame')).toBe(false);
        expect(events[0]?.kind).toBe('bad-frame');
      }
    }
  });

  it('the simulator resynchronises like the station: a damaged length never swallows the next frame', () => {
    const hello = byWhat(vectors, 'HELLO').frame;
    const bogus = Buffer.from([0xa5, 0x5a, 0x01, 0x07, 0xff, 0xff]); // length 65535: over the limit
    const stream = Buffer.concat([Buffer.from('line noise'), bogus, damaged(hello), hello]);
    const received = oneByteAtATime(new FrameReceiver(), stream);
    expect(received.map((r) => r.ok)).toEqual([false, false, true]);
    const decoded = new FrameDecoder().push(stream);
    expect(decoded.map((e) => e.kind)).toEqual(['bad-frame', 'bad-frame', 'frame']);
  });

  it('the simulator recovers from bytes lost in the middle of a frame by the next frame', () => {
    const chunk = byWhat(vectors, 'CHUNK').frame;
    const lossy = Buffer.concat([chunk.subarray(0, 8), chunk.subarray(11)]); // 3 bytes lost
    const hello = byWhat(vectors, 'HELLO').frame;
    const identity = byWhat(vectors, 'IDENTITY').frame;
    const received = oneByteAtATime(new FrameReceiver(), Buffer.concat([lossy, hello, identity]));
    const good = received.flatMap((r) => (r.ok ? [r.frame.type] : []));
    // The damaged frame is never delivered; the stream is back by the frame after it at the latest.
    expect(good).not.toContain(0x11);
    expect(good).toContain(0x02);
  });
});

describe('nordic-at: the modem simulator against the reference examples and the driver', () => {
  const TAG = 16842753;
  const PEM_LF = '-----BEGIN CERTIFICATE-----\nMIIB\nAAAA\n-----END CERTIFICATE-----\n';

  it('cuts command lines at CR or LF, but not inside a quoted PEM', () => {
    const write = `AT%CMNG=0,${TAG},1,"${normalizePem(PEM_LF)}"`;
    const bytes = Buffer.from(`AT+CGSN\r\n${write}\r\n`);
    for (const cut of [1, 7, 20, bytes.length]) {
      const lines = new CommandLines();
      const got: string[] = [];
      for (let off = 0; off < bytes.length; off += cut)
        got.push(...lines.push(bytes.subarray(off, off + cut)).map((b) => b.toString('latin1')));
      expect(got).toEqual(['AT+CGSN', write]);
    }
  });

  it("reads the reference's commands: name, usage, and parameters with quoted strings kept whole", () => {
    expect(parseCommand('AT%KEYGEN=16842753,2,0')).toEqual({
      name: 'AT%KEYGEN',
      usage: 'set',
      params: ['16842753', '2', '0'].map((text) => ({ text, quoted: false })),
    });
    expect(
      parseCommand('AT%KEYGEN=16842753,2,0,"O=Nordic Semiconductor,L=Trondheim,C=no,CN=0123456789"')
        ?.params[3],
    ).toEqual({ text: 'O=Nordic Semiconductor,L=Trondheim,C=no,CN=0123456789', quoted: true });
    expect(parseCommand('AT%CMNG=1,16842753')?.params.map((p) => p.text)).toEqual(['1', '16842753']);
    expect(parseCommand('AT+CFUN?')).toEqual({ name: 'AT+CFUN', usage: 'read', params: [] });
    expect(parseCommand('at+cfun=?')).toEqual({ name: 'AT+CFUN', usage: 'test', params: [] });
    expect(parseCommand('AT')).toEqual({ name: 'AT', usage: 'action', params: [] });
    expect(parseCommand('AT%CMNG=0,1,0,"abc')).toBeUndefined();
    expect(parseCommand('AT%CMNG=0,1,0,"abc"def')).toBeUndefined();
    expect(parseCommand('hello')).toBeUndefined();
  });

  it("reads the Serial LTE Modem's MQTT commands as the driver writes them (§7.1)", () => {
    expect(parseCommand(mqttConnectCommand('localhost', 8883, TAG))).toEqual({
      name: 'AT#XMQTTCON',
      usage: 'set',
      params: [
        { text: '1', quoted: false },
        { text: '', quoted: true },
        { text: '', quoted: true },
        { text: 'localhost', quoted: true },
        { text: '8883', quoted: false },
        { text: String(TAG), quoted: false },
      ],
    });
    expect(parseCommand('AT#XMQTTCFG="SN-1",60,1')?.params[0]).toEqual({ text: 'SN-1', quoted: true });
  });

  it('the station reads an #XMQTTEVT after the OK as a notification of its own, never as the next answer', () => {
    const reader = new AtResponseReader();
    const got = reader.push(answer([], 'OK', ['#XMQTTEVT: 0,0']));
    expect(got).toEqual([
      { lines: [], final: { kind: 'ok' } },
      { lines: ['#XMQTTEVT: 0,0'], final: { kind: 'urc' } },
    ]);
    expect(parseMqttEvent(got[1]!.lines[0]!)).toEqual({ type: 0, result: 0 });
    expect(parseMqttEvent('#XMQTTEVT: 1,-128')).toEqual({ type: 1, result: -128 });
    // The next command's answer is its own.
    expect(reader.push(answer(['#XMQTTCON: 0'], 'OK'))).toEqual([
      { lines: ['#XMQTTCON: 0'], final: { kind: 'ok' } },
    ]);
  });

  it("hashes the bytes as they arrived: the driver's expected hash for normalised text, not for LF text", () => {
    const text = normalizePem(PEM_LF);
    expect(credentialDigest(text)).toBe(sha256Upper(text));
    expect(credentialDigest(PEM_LF.trim())).not.toBe(sha256Upper(text));
    expect(credentialDigest('abc')).toBe('BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD');
  });

  it("the driver reads the modem's answers: IMEI, a write, and the listed hash of what it sent", async () => {
    const imei = '352656100000001';
    const modem = new NordicModemModel({ imei });
    const reader = new AtResponseReader();
    const send = async (command: string): Promise<AtResponse> => {
      const [line] = modem.split(Buffer.from(`${command}\r\n`));
      const [response, ...more] = reader.push((await modem.handle(line!))!);
      expect(more).toEqual([]);
      return response!;
    };
    expect((await send('AT+CMEE=1')).final).toEqual({ kind: 'ok' });
    expect(parseImei((await send('AT+CGSN')).lines)).toBe(imei);
    const text = normalizePem(PEM_LF);
    // Credential work while the modem is active: refused with 518, as the reference says.
    expect((await send(cmngWriteCommand(TAG, 1, text))).final).toEqual({ kind: 'cme', code: 518 });
    expect((await send('AT+CFUN=4')).final).toEqual({ kind: 'ok' });
    expect((await send(cmngWriteCommand(TAG, 1, text))).final).toEqual({ kind: 'ok' });
    expect(parseCmngList((await send(`AT%CMNG=1,${TAG}`)).lines)).toEqual([
      { secTag: TAG, type: 1, sha256: sha256Upper(text) },
    ]);
    // The content is a string constant: unquoted, the modem refuses it.
    expect((await send(`AT%CMNG=0,${TAG},0,abc`)).final).toEqual({ kind: 'error' });
  });
});
