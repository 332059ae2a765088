/**
 * A simulated Nordic nRF91 modem speaking the AT subset in shared/reference/device-protocols.md
 * A.1: identity, CFUN, CMEE, the %CMNG credential store (hashes over the text exactly as
 * written) and %KEYGEN (a real P-256 key and CSR, with a COSE_Sign1 attestation part signed by
 * the simulated device identity key). Like the modem, it refuses credential work while active.
 * Its command line is its own (nordic-at-wire.ts), read from the reference, not the driver's.
 *
 * It also plays the Serial LTE Modem application's MQTT client (`AT#XMQTTCFG`, `AT#XMQTTCON`,
 * the `#XMQTTEVT` notification): a real MQTT connect over TLS with the credentials of the
 * sec_tag it is given (docs/device-protocol.md §7.1). Like the SLM it connects synchronously,
 * does not retry, and stays connected until `AT#XMQTTCON=0`.
 */
import { createHash, createPrivateKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import type { Category } from './core/faults.js';
import type { DeviceModel } from './core/host.js';
import { generateKeyWithCsr, signMessage } from './core/device-crypto.js';
import {
  DEVICE_CONNECT_POLICY,
  connectOnce,
  type ConnectPolicy,
  type HeldConnection,
} from './core/mqtt-connect.js';
import {
  CommandLines,
  answer,
  credentialDigest,
  errorResult,
  parseCommand,
  type Param,
} from './nordic-at-wire.js';

export interface NordicSimOptions {
  imei: string;
  firmware?: string;
  model?: string;
  /** Credential slots the store holds before 515 (memory full). */
  capacity?: number;
  /** How long the MQTT client waits for a CONNACK (tests shorten it). */
  connectPolicy?: ConnectPolicy;
  log?: (line: string) => void;
}

/** What the SLM's MQTT library reports for a link the server closed, and for a timeout (Zephyr errno). */
const ENOTCONN = 128;
const ETIMEDOUT = 116;

interface Stored {
  content: string;
  sha256: string;
}

const MAX_SEC_TAG = 2147483647;

export class NordicModemModel implements DeviceModel {
  /** AT+CFUN state: 1 active at power-on, 4 offline, 0 minimal. */
  cfun = 1;
  cmee = false;
  /** `<sec_tag>,<type>` → stored credential. */
  readonly store = new Map<string, Stored>();
  private readonly lines = new CommandLines();
  private readonly identityKey: KeyObject;
  private readonly uuid = randomBytes(16);
  /** `AT#XMQTTCFG`: the SLM's default client id until one is set. */
  private mqttClientId = 'slm_default_client_id';
  private mqtt: { held: HeldConnection; url: string; port: number; secTag: number } | undefined;

  constructor(private readonly opts: NordicSimOptions) {
    if (!/^\d{15}$/.test(opts.imei)) throw new Error(`an IMEI is 15 digits, got "${opts.imei}"`);
    this.identityKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  }

  split(chunk: Buffer): Buffer[] {
    return this.lines.push(chunk);
  }

  categorize(command: Buffer): Category {
    const text = command.subarray(0, 24).toString('latin1').toUpperCase();
    if (text.startsWith('AT%CMNG=0')) return 'write';
    if (text.startsWith('AT%CMNG=1') || text.startsWith('AT%CMNG=2')) return 'read';
    if (text.startsWith('AT%KEYGEN')) return 'keygen';
    if (text.startsWith('AT#XMQTT')) return 'connect';
    if (text.startsWith('AT+CGSN') || text.startsWith('AT+CGMR') || text.startsWith('AT+CGMM'))
      return 'identity';
    return 'control';
  }

  rejection(command: Buffer): Buffer | undefined {
    return this.categorize(command) === 'write' ? this.error(527) : undefined;
  }

  handle(command: Buffer): Promise<Buffer | undefined> {
    return this.run(command.toString('latin1'));
  }

  /** Unplugged: an open MQTT connection goes down with the device. */
  close(): void {
    void this.mqtt?.held.disconnect();
    this.mqtt = undefined;
  }

  private async run(line: string): Promise<Buffer> {
    const cmd = parseCommand(line);
    if (!cmd) return this.answer([], 'ERROR');
    const { name, usage, params } = cmd;
    const args = params.map((p) => p.text);
    switch (`${name} ${usage}`) {
      case 'AT action':
        return this.answer([]);
      case 'AT+CMEE set':
        if (args[0] !== '0' && args[0] !== '1') return this.answer([], 'ERROR');
        this.cmee = args[0] === '1';
        return this.answer([]);
      case 'AT+CGSN action':
        return this.answer([this.opts.imei]);
      case 'AT+CGMR action':
        return this.answer([this.opts.firmware ?? 'mfw_nrf9160_1.3.5']);
      case 'AT+CGMM action':
        return this.answer([this.opts.model ?? 'nRF9160-SICA']);
      case 'AT+CFUN read':
        return this.answer([`+CFUN: ${this.cfun}`]);
      case 'AT+CFUN set': {
        const n = Number(args[0]);
        if (![0, 1, 4, 20, 21, 30, 31, 40, 41, 44].includes(n)) return this.answer([], 'ERROR');
        this.cfun = n === 0 || n === 4 ? n : n === 1 ? 1 : this.cfun;
        return this.answer([]);
      }
      case 'AT%CMNG set':
        return this.cmng(params);
      case 'AT%KEYGEN set':
        return this.keygen(params);
      case 'AT#XMQTTCFG set': {
        const [clientId, keepAlive = '60', clean = '0'] = args;
        if (!params[0]?.quoted || !clientId || !/^\d+$/.test(keepAlive) || (clean !== '0' && clean !== '1'))
          return this.answer([], 'ERROR');
        if (this.mqtt) return this.answer([], 'ERROR'); // -EINVAL while connected
        this.mqttClientId = clientId;
        return this.answer([]);
      }
      case 'AT#XMQTTCON set':
        return this.mqttConnect(params);
      case 'AT#XMQTTCON read':
        return this.answer([
          this.mqtt
            ? `#XMQTTCON: 1,"${this.mqttClientId}","${this.mqtt.url}",${this.mqtt.port},${this.mqtt.secTag}`
            : '#XMQTTCON: 0',
        ]);
      default:
        return this.answer([], 'ERROR');
    }
  }

  private cmng(params: Param[]): Buffer {
    const [opcode, tagArg, typeArg, content] = params.map((p) => p.text);
    // The content is a string constant: a modem refuses it unquoted.
    if (params[3] && !params[3].quoted) return this.answer([], 'ERROR');
    const tag = tagArg === undefined ? undefined : Number(tagArg);
    const type = typeArg === undefined ? undefined : Number(typeArg);
    if (tag !== undefined && (!Number.isInteger(tag) || tag < 0)) return this.answer([], 'ERROR');
    if (tag !== undefined && tag > MAX_SEC_TAG) return this.error(514);
    const key = `${tag},${type}`;
    switch (opcode) {
      case '0': {
        if (tag === undefined || type === undefined || content === undefined || content.length === 0)
          return this.answer([], 'ERROR');
        if (this.cfun === 1) return this.error(518);
        if (this.store.has(key)) return this.error(519);
        if (this.store.size >= (this.opts.capacity ?? 32)) return this.error(515);
        if (
          (type === 0 || type === 1) &&
          !/^-----BEGIN CERTIFICATE-----\r?\n[\s\S]+\r?\n-----END CERTIFICATE-----$/.test(content)
        )
          return this.error(527);
        this.store.set(key, { content, sha256: credentialDigest(content) });
        return this.answer([]);
      }
      case '1': {
        const lines = [...this.store.entries()]
          .map(([k, v]) => [...k.split(',').map(Number), v] as [number, number, Stored])
          .filter(([t, ty]) => (tag === undefined || t === tag) && (type === undefined || ty === type))
          .sort((a, b) => a[0] - b[0] || a[1] - b[1])
          .map(([t, ty, v]) => `%CMNG: ${t},${ty},"${v.sha256}"`);
        return this.answer(lines);
      }
      case '2': {
        const v = this.store.get(key);
        if (!v) return this.error(513);
        return this.answer([`%CMNG: ${tag},${type},"${v.sha256}","${v.content}"`]);
      }
      case '3': {
        if (this.cfun === 1) return this.error(518);
        if (!this.store.delete(key)) return this.error(513);
        return this.answer([]);
      }
      default:
        return this.answer([], 'ERROR');
    }
  }

  private async keygen(params: Param[]): Promise<Buffer> {
    const [tagArg, typeArg, formatArg = '0', attributes] = params.map((p) => p.text);
    if (params[3] && !params[3].quoted) return this.answer([], 'ERROR');
    const tag = Number(tagArg);
    if (
      !Number.isInteger(tag) ||
      tag < 0 ||
      (typeArg !== '2' && typeArg !== '8') ||
      (formatArg !== '0' && formatArg !== '1')
    )
      return this.answer([], 'ERROR');
    if (tag > MAX_SEC_TAG) return this.error(514);
    if (this.cfun === 1) return this.error(518);
    const key = `${tag},${typeArg}`;
    if (this.store.has(key)) return this.error(519);
    let generated;
    try {
      generated = await generateKeyWithCsr(attributes?.length ? attributes : `CN=${this.opts.imei}`);
    } catch {
      return this.error(523);
    }
    const pem = generated.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    this.store.set(key, { content: pem, sha256: credentialDigest(pem) });
    const first = formatArg === '0' ? generated.csrDer : generated.spkiDer;
    const cose = this.attest(first, tag, formatArg === '0' ? 'CSR_msg_v1' : 'pubkey_msg_v2');
    return this.answer([`%KEYGEN: "${first.toString('base64url')}.${cose.toString('base64url')}"`]);
  }

  /** COSE_Sign1 over [type, uuid, sec_tag, SHA-256(first part), nonce], signed by the identity key. */
  private attest(first: Buffer, tag: number, type: string): Buffer {
    const payload = cbor.array([
      cbor.text(type),
      cbor.bytes(this.uuid),
      cbor.uint(tag),
      cbor.bytes(createHash('sha256').update(first).digest()),
      cbor.bytes(randomBytes(16)),
    ]);
    const protectedHeader = cbor.bytes(cbor.map1(cbor.uint(1), cbor.negint(-7))); // alg: ES256
    const toSign = cbor.array([
      cbor.text('Signature1'),
      protectedHeader,
      cbor.bytes(Buffer.alloc(0)),
      cbor.bytes(payload),
    ]);
    const sig = signMessage({ privateKey: this.identityKey, spkiDer: Buffer.alloc(0) }, toSign);
    return cbor.tag(18, cbor.array([protectedHeader, cbor.map0(), cbor.bytes(payload), cbor.bytes(sig)]));
  }

  /**
   * `AT#XMQTTCON=<op>[,<username>,<password>,<url>,<port>[,<sec_tag>]]`. op 1: open TLS with the
   * sec_tag's credentials and send CONNECT; ERROR if the link cannot be opened, else OK and then
   * the `#XMQTTEVT` of the CONNACK (`0,<return code>`) or of the link closing first (`1,-128`).
   * op 0: DISCONNECT, OK and `#XMQTTEVT: 1,0`.
   */
  private async mqttConnect(params: Param[]): Promise<Buffer> {
    const [op, , , url, portArg, tagArg] = params.map((p) => p.text);
    if (op === '0') {
      if (!this.mqtt) return this.answer([], 'ERROR'); // -ENOTCONN
      const { held } = this.mqtt;
      this.mqtt = undefined;
      await held.disconnect();
      return answer([], 'OK', ['#XMQTTEVT: 1,0']);
    }
    if (op !== '1' && op !== '2') return this.answer([], 'ERROR');
    const port = Number(portArg);
    const tag = Number(tagArg);
    if (!url || !params[3]?.quoted || !Number.isInteger(port) || port < 1 || port > 65535)
      return this.answer([], 'ERROR');
    if (this.mqtt) return this.answer([], 'ERROR'); // -EISCONN
    // No network while offline (AT+CFUN=4 for credential work): the host name does not resolve.
    if (this.cfun !== 1) {
      this.log('mqtt: no network (AT+CFUN=1 first)');
      return this.answer([], 'ERROR');
    }
    // Without a sec_tag the SLM speaks plain TCP, which AWS IoT does not accept.
    if (!Number.isInteger(tag) || tagArg === undefined) return this.answer([], 'ERROR');
    const rootCa = this.store.get(`${tag},0`)?.content;
    const certificate = this.store.get(`${tag},1`)?.content;
    const keyPem = this.store.get(`${tag},2`)?.content;
    if (!rootCa || !certificate || !keyPem) return this.answer([], 'ERROR');
    let key: KeyObject;
    try {
      key = createPrivateKey(keyPem);
    } catch {
      return this.answer([], 'ERROR');
    }
    const policy = this.opts.connectPolicy ?? DEVICE_CONNECT_POLICY;
    const a = await connectOnce(
      { host: url, port, clientId: this.mqttClientId, rootCaPem: rootCa, certificatePem: certificate, key },
      policy,
      { hold: true },
    );
    this.log(`mqtt: ${url}:${port} as ${this.mqttClientId}: ${a.outcome} ${a.code} ${a.reason}`);
    switch (a.outcome) {
      case 'tls':
      case 'network':
        return this.answer([], 'ERROR');
      case 'connack':
        if (a.held) {
          this.mqtt = { held: a.held, url, port, secTag: tag };
          void a.held.closed.then(() => {
            if (this.mqtt?.held === a.held) this.mqtt = undefined;
          });
        }
        return answer([], 'OK', [`#XMQTTEVT: 0,${a.code}`]);
      case 'closed':
        return answer([], 'OK', [`#XMQTTEVT: 1,-${ENOTCONN}`]);
      case 'timeout':
        return answer([], 'OK', [`#XMQTTEVT: 1,-${ETIMEDOUT}`]);
    }
  }

  private log(line: string): void {
    this.opts.log?.(line);
  }

  private error(n: number): Buffer {
    return answer([], errorResult(n, this.cmee));
  }

  private answer(lines: string[], final: 'OK' | 'ERROR' = 'OK'): Buffer {
    return answer(lines, final);
  }
}

/** Just enough CBOR (RFC 8949) for the attestation part. */
const cbor = {
  head(major: number, n: number): Buffer {
    if (n < 24) return Buffer.from([(major << 5) | n]);
    if (n < 0x100) return Buffer.from([(major << 5) | 24, n]);
    if (n < 0x10000) return Buffer.from([(major << 5) | 25, n >> 8, n & 0xff]);
    const b = Buffer.alloc(5);
    b[0] = (major << 5) | 26;
    b.writeUInt32BE(n, 1);
    return b;
  },
  uint: (n: number): Buffer => cbor.head(0, n),
  negint: (n: number): Buffer => cbor.head(1, -1 - n),
  bytes: (b: Buffer): Buffer => Buffer.concat([cbor.head(2, b.length), b]),
  text: (s: string): Buffer => Buffer.concat([cbor.head(3, Buffer.byteLength(s)), Buffer.from(s, 'utf8')]),
  array: (items: Buffer[]): Buffer => Buffer.concat([cbor.head(4, items.length), ...items]),
  map0: (): Buffer => cbor.head(5, 0),
  map1: (k: Buffer, v: Buffer): Buffer => Buffer.concat([cbor.head(5, 1), k, v]),
  tag: (t: number, item: Buffer): Buffer => Buffer.concat([cbor.head(6, t), item]),
};
