/**
 * A simulated device provisioning itself by claim (docs/device-protocol.md "Fleet
 * provisioning"), the way firmware would, with node:tls and mqtt-packet only:
 *
 *   connect with the claim certificate and key (MQTT 3.1.1, client id = its thing name)
 *   subscribe to the answers, then CreateCertificateFromCsr with a key made on the device
 *     (or CreateKeysAndCertificate), then RegisterThing with its parameters
 *   disconnect; the new certificate and key replace nothing until RegisterThing accepted
 *
 * Topics are AWS's JSON ones. Every step waits for its answer within its own budget; a
 * rejection is reported with AWS's statusCode, errorCode and errorMessage. The caller then
 * makes its first connect with the new credentials (mqtt-connect.ts).
 */
import { isIP } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { KeyObject } from 'node:crypto';
import mqtt, { type Packet } from 'mqtt-packet';
import { fromPem, generateKeyWithCsr, type DeviceKey } from './device-crypto.js';

export interface FleetRequest {
  host: string;
  port: number;
  clientId: string;
  rootCaPem: string;
  claimCertificatePem: string;
  claimKey: KeyObject;
  templateName: string;
  parameters: Record<string, string>;
  /** `csr`: a key made on the device (preferred); `keys`: AWS makes the key pair. */
  mode: 'csr' | 'keys';
  /** Subject of the device's CSR. */
  subject: string;
  /** Per-step budget (connect, each answer). */
  stepMs?: number;
}

export type FleetStage = 'connect' | 'subscribe' | 'create' | 'register';

export type FleetOutcome =
  | { ok: true; thingName: string; certificateId: string; certificatePem: string; key: DeviceKey }
  | { ok: false; stage: FleetStage; denied: boolean; errorCode: string; message: string };

interface Answer {
  topic: string;
  body: Record<string, unknown>;
}

/** A string field of an answer ('' when absent or not a string). */
const str = (body: Record<string, unknown>, k: string, fallback = ''): string =>
  typeof body[k] === 'string' ? body[k] : fallback;

class Session {
  private readonly waiting = new Map<string, (a: Answer) => void>();
  private closedReason: string | undefined;
  private readonly onClose: Array<(reason: string) => void> = [];
  private packetId = 1;

  constructor(private readonly socket: TLSSocket) {
    const parser = mqtt.parser({ protocolVersion: 4 });
    parser.on('packet', (p: Packet) => this.packet(p));
    parser.on('error', (e: Error) => this.close(`malformed packet from the server (${e.message})`));
    socket.on('data', (c: Buffer) => parser.parse(c));
    socket.on('error', (e: NodeJS.ErrnoException) => this.close(`the link failed: ${e.code ?? e.message}`));
    socket.on('close', () => this.close('the server closed the connection'));
  }

  private packet(p: Packet): void {
    if (p.cmd === 'connack')
      this.resolve('$connack', { topic: '$connack', body: { code: p.returnCode ?? 0 } });
    else if (p.cmd === 'suback')
      this.resolve('$suback', { topic: '$suback', body: { granted: p.granted ?? [] } });
    else if (p.cmd === 'publish') {
      if (p.qos === 1 && p.messageId !== undefined)
        this.socket.write(mqtt.generate({ cmd: 'puback', messageId: p.messageId }));
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(Buffer.from(p.payload).toString('utf8')) as Record<string, unknown>;
      } catch {
        /* an answer that is not JSON is reported by the step that waits for it */
      }
      this.resolve(p.topic, { topic: p.topic, body });
    }
  }

  private resolve(key: string, a: Answer): void {
    const w = this.waiting.get(key);
    if (w) {
      this.waiting.delete(key);
      w(a);
    }
  }

  private close(reason: string): void {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    for (const f of this.onClose) f(reason);
    this.socket.destroy();
  }

  /** The first of these keys to arrive, or a rejection with why nothing came. */
  wait(keys: string[], ms: number, what: string): Promise<Answer> {
    return new Promise((resolve, reject) => {
      if (this.closedReason !== undefined) return reject(new Error(`${what}: ${this.closedReason}`));
      const timer = setTimeout(() => done(undefined, `${what}: no answer within ${ms} ms`), ms);
      const done = (a: Answer | undefined, err?: string): void => {
        clearTimeout(timer);
        for (const k of keys) this.waiting.delete(k);
        if (a) resolve(a);
        else reject(new Error(err ?? what));
      };
      for (const k of keys) this.waiting.set(k, (a) => done(a));
      this.onClose.push((reason) => done(undefined, `${what}: ${reason}`));
    });
  }

  send(packet: Parameters<typeof mqtt.generate>[0]): void {
    this.socket.write(mqtt.generate(packet));
  }

  nextId(): number {
    return this.packetId++;
  }

  end(): void {
    if (this.closedReason === undefined) {
      this.closedReason = 'ended';
      this.socket.end(mqtt.generate({ cmd: 'disconnect' }));
    }
  }
}

function openLink(req: FleetRequest): TLSSocket {
  return tlsConnect({
    host: req.host,
    port: req.port,
    ...(isIP(req.host) ? {} : { servername: req.host }),
    ca: [req.rootCaPem],
    cert: req.claimCertificatePem,
    key: req.claimKey.export({ type: 'pkcs8', format: 'pem' }),
    minVersion: 'TLSv1.2',
  });
}

const toPem = (der: Buffer, tag: string): string =>
  `-----BEGIN ${tag}-----\n${der
    .toString('base64')
    .replace(/.{64}/g, '$&\n')
    .trimEnd()}\n-----END ${tag}-----\n`;

/** Provisions the device with its claim; never throws, every failure is an outcome. */
export async function fleetProvision(req: FleetRequest, log?: (line: string) => void): Promise<FleetOutcome> {
  const stepMs = req.stepMs ?? 15_000;
  const fail = (stage: FleetStage, message: string, errorCode = '', denied = false): FleetOutcome => ({
    ok: false,
    stage,
    denied,
    errorCode,
    message,
  });
  let socket: TLSSocket;
  try {
    socket = openLink(req);
  } catch (e) {
    return fail('connect', `cannot use the claim credentials: ${(e as Error).message}`);
  }
  const s = new Session(socket);
  try {
    const secured = new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', () => resolve());
      socket.once('error', (e: Error) => reject(e));
      socket.once('close', () => reject(new Error('the server closed the link during the TLS handshake')));
    });
    try {
      await secured;
    } catch (e) {
      return fail('connect', `TLS with the claim failed: ${(e as Error).message}`, '', true);
    }
    s.send({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 4,
      clean: true,
      clientId: req.clientId,
      keepalive: 60,
    });
    let connack: Answer;
    try {
      connack = await s.wait(['$connack'], stepMs, 'connect with the claim');
    } catch (e) {
      // AWS hangs up on a claim certificate it refuses (revoked, expired, not allowed).
      return fail('connect', (e as Error).message, '', true);
    }
    if (connack.body.code !== 0)
      return fail('connect', `the server refused the claim (CONNACK ${String(connack.body.code)})`, '', true);

    const create =
      req.mode === 'csr' ? '$aws/certificates/create-from-csr/json' : '$aws/certificates/create/json';
    const provision = `$aws/provisioning-templates/${req.templateName}/provision/json`;
    const filters = [create, provision].flatMap((t) => [`${t}/accepted`, `${t}/rejected`]);
    s.send({
      cmd: 'subscribe',
      messageId: s.nextId(),
      subscriptions: filters.map((topic) => ({ topic, qos: 1 as const })),
    });
    try {
      const sub = await s.wait(['$suback'], stepMs, 'subscribe to the answers');
      const granted = sub.body.granted as number[];
      if (granted.some((g) => g === 0x80))
        return fail(
          'subscribe',
          `the claim may not subscribe to ${filters.filter((_, i) => granted[i] === 0x80).join(', ')}`,
        );
    } catch (e) {
      return fail('subscribe', (e as Error).message);
    }

    // The device's own key (csr), or AWS's (keys).
    let key: DeviceKey | undefined;
    let payload: Record<string, unknown> = {};
    if (req.mode === 'csr') {
      const generated = await generateKeyWithCsr(req.subject);
      key = generated;
      payload = { certificateSigningRequest: toPem(generated.csrDer, 'CERTIFICATE REQUEST') };
    }
    s.send({
      cmd: 'publish',
      topic: create,
      payload: Buffer.from(JSON.stringify(payload)),
      qos: 0,
      retain: false,
      dup: false,
    });
    let created: Answer;
    try {
      created = await s.wait([`${create}/accepted`, `${create}/rejected`], stepMs, 'the certificate');
    } catch (e) {
      return fail('create', (e as Error).message);
    }
    if (created.topic.endsWith('/rejected'))
      return fail('create', str(created.body, 'errorMessage', 'rejected'), str(created.body, 'errorCode'));
    const certificateId = str(created.body, 'certificateId');
    const certificatePem = str(created.body, 'certificatePem');
    const token = str(created.body, 'certificateOwnershipToken');
    if (req.mode === 'keys') key = fromPem(str(created.body, 'privateKey'));
    log?.(`fleet: certificate ${certificateId} issued; registering with template ${req.templateName}`);

    s.send({
      cmd: 'publish',
      topic: provision,
      payload: Buffer.from(JSON.stringify({ certificateOwnershipToken: token, parameters: req.parameters })),
      qos: 0,
      retain: false,
      dup: false,
    });
    let registered: Answer;
    try {
      registered = await s.wait([`${provision}/accepted`, `${provision}/rejected`], stepMs, 'RegisterThing');
    } catch (e) {
      return fail('register', (e as Error).message);
    }
    if (registered.topic.endsWith('/rejected')) {
      const code = str(registered.body, 'errorCode');
      return fail(
        'register',
        str(registered.body, 'errorMessage', 'rejected'),
        code,
        code === 'ACCESS_DENIED',
      );
    }
    const thingName = str(registered.body, 'thingName');
    log?.(`fleet: registered as thing ${thingName}`);
    return { ok: true, thingName, certificateId, certificatePem, key: key! };
  } finally {
    s.end();
  }
}
