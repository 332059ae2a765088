/**
 * A simulated custom-firmware device speaking provline-serial-v1 (docs/device-protocol.md):
 * a staging buffer per write with cumulative acknowledgements, a SHA-256 check on COMMIT,
 * a KEK to unwrap wrapped keys as-is, on-device keygen with a CSR, and PROVE signing. Its wire
 * format is its own (serial-v1-wire.ts), read from the document, not the station driver's.
 */
import { createHash } from 'node:crypto';
import { impostorSerial, type Category } from './core/faults.js';
import type { DeviceModel } from './core/host.js';
import { fromPem, generateKeyWithCsr, signMessage, unwrapKey, type DeviceKey } from './core/device-crypto.js';
import { fleetProvision } from './core/fleet-provision.js';
import {
  DEVICE_CONNECT_POLICY,
  firstConnect,
  type AttemptReport,
  type ConnectPolicy,
} from './core/mqtt-connect.js';
import {
  Caps,
  Command,
  ConnectOutcome,
  Fields,
  FrameReceiver,
  ProvisionStage,
  MalformedPayload,
  PAYLOAD_LIMIT,
  Slot,
  Status,
  VERSION,
  answerBytes,
  nakBytes,
  proofMessage,
  put,
  readFrame,
  type WireFrame,
} from './serial-v1-wire.js';

export interface SerialV1SimOptions {
  serial: string;
  model?: string;
  firmware?: string;
  /** 32-byte AES-256 KEK; without it the device cannot take wrapped keys. */
  kek?: Buffer;
  /** Largest object the device stores. */
  maxObject?: number;
  /** False for a device without a network link: CONNECT's capability bit is clear. */
  network?: boolean;
  /** How the device's first connect retries (tests shorten the pauses). */
  connectPolicy?: ConnectPolicy;
  log?: (line: string) => void;
}

interface Staging {
  slot: number;
  size: number;
  sha256: Buffer;
  data: Buffer[];
  received: number;
}

const sha256 = (b: Buffer): Buffer => createHash('sha256').update(b).digest();

/** Fleet parameters with every value that is the device's serial replaced by an impostor's. */
const presenting = (parameters: Record<string, string>, serial: string): Record<string, string> =>
  Object.fromEntries(
    Object.entries(parameters).map(([k, v]) => [k, v === serial ? impostorSerial(serial) : v]),
  );

export class SerialV1Model implements DeviceModel {
  readonly objects = new Map<number, Buffer>();
  key: DeviceKey | undefined;
  /** The claim key (slot 5, or unwrapped from slot 6). */
  claimKey: DeviceKey | undefined;
  /** Set once the device registered itself by claim: what a second PROVISION reports. */
  provisioned: { thingName: string; certificateId: string } | undefined;
  private staging: Staging | undefined;
  private readonly receiver = new FrameReceiver();

  constructor(private readonly opts: SerialV1SimOptions) {
    if (opts.kek && opts.kek.length !== 32) throw new Error('the KEK must be 32 bytes (AES-256)');
  }

  split(chunk: Buffer): Buffer[] {
    // Damaged frames are passed on too, so the device can NAK them.
    return this.receiver.push(chunk).map((r) => r.raw);
  }

  categorize(raw: Buffer): Category {
    const type = raw.length > 2 ? raw[2] : undefined;
    switch (type) {
      case Command.HELLO:
      case Command.IDENTITY:
        return 'identity';
      case Command.CHUNK:
      case Command.COMMIT:
        return 'write';
      case Command.READ_HASH:
        return 'read';
      case Command.KEYGEN:
        return 'keygen';
      case Command.PROVE:
        return 'pop';
      case Command.CONNECT:
      case Command.PROVISION:
        return 'connect';
      default:
        return 'control';
    }
  }

  rejection(raw: Buffer): Buffer | undefined {
    const frame = readFrame(raw);
    if (frame?.type !== Command.COMMIT) return undefined;
    // The station starts the object again with BEGIN, which replaces the staging buffer.
    return answerBytes(frame, Status.CONTENT_REJECTED);
  }

  impersonates(raw: Buffer): boolean {
    return readFrame(raw)?.type === Command.PROVISION;
  }

  async handle(raw: Buffer, fault?: { impostor: boolean }): Promise<Buffer | undefined> {
    const frame = readFrame(raw);
    if (!frame) return nakBytes();
    try {
      return await this.run(frame, fault?.impostor === true);
    } catch (e) {
      if (e instanceof MalformedPayload) return answerBytes(frame, Status.BAD_PAYLOAD);
      throw e;
    }
  }

  private get caps(): number {
    return (
      Caps.KEYGEN |
      Caps.PROVE |
      (this.opts.kek ? Caps.WRAPPED_KEYS : 0) |
      (this.opts.network === false ? 0 : Caps.CONNECT | Caps.FLEET)
    );
  }

  private async run(frame: WireFrame, impostor: boolean): Promise<Buffer> {
    const r = new Fields(frame.payload);
    switch (frame.type) {
      case Command.HELLO: {
        const min = r.byte();
        const max = r.byte();
        r.done();
        if (VERSION < min || VERSION > max) return answerBytes(frame, Status.VERSION_UNSUPPORTED);
        return answerBytes(frame, Status.OK, put.byte(VERSION), put.half(PAYLOAD_LIMIT), put.word(this.caps));
      }
      case Command.IDENTITY:
        r.done();
        return answerBytes(
          frame,
          Status.OK,
          put.text8(this.opts.serial),
          put.text8(this.opts.model ?? 'provline-sim'),
          put.text8(this.opts.firmware ?? 'sim-1.0.0'),
        );
      case Command.BEGIN: {
        const slot = r.byte();
        const size = r.word();
        const digest = r.digest();
        r.done();
        if (!isSlot(slot) || size === 0) return answerBytes(frame, Status.BAD_PAYLOAD);
        if ((slot === Slot.WRAPPED_KEY || slot === Slot.CLAIM_WRAPPED_KEY) && !this.opts.kek)
          return answerBytes(frame, Status.UNWRAP_FAILED);
        if (size > (this.opts.maxObject ?? 16_384)) return answerBytes(frame, Status.NO_SPACE);
        this.staging = { slot, size, sha256: digest, data: [], received: 0 };
        return answerBytes(frame, Status.OK);
      }
      case Command.CHUNK: {
        const slot = r.byte();
        const offset = r.word();
        const data = r.remainder();
        const s = this.staging;
        if (!s || s.slot !== slot) return answerBytes(frame, Status.BAD_PAYLOAD);
        if (offset + data.length === s.received && offset < s.received)
          return answerBytes(frame, Status.OK, put.word(s.received)); // a retransmission
        if (offset !== s.received) return answerBytes(frame, Status.BAD_OFFSET, put.word(s.received));
        if (s.received + data.length > s.size) return answerBytes(frame, Status.BAD_PAYLOAD);
        s.data.push(data);
        s.received += data.length;
        return answerBytes(frame, Status.OK, put.word(s.received));
      }
      case Command.COMMIT: {
        const slot = r.byte();
        r.done();
        return this.commit(frame, slot);
      }
      case Command.READ_HASH: {
        const slot = r.byte();
        r.done();
        const stored = this.objects.get(slot);
        if (!stored) return answerBytes(frame, Status.NOT_FOUND);
        return answerBytes(frame, Status.OK, put.word(stored.length), sha256(stored));
      }
      case Command.ERASE: {
        const slot = r.byte();
        r.done();
        if (!this.objects.delete(slot)) return answerBytes(frame, Status.NOT_FOUND);
        return answerBytes(frame, Status.OK);
      }
      case Command.KEYGEN: {
        const keyType = r.byte();
        const subject = r.lengthPrefixed16().toString('utf8');
        r.done();
        if (keyType !== 1) return answerBytes(frame, Status.BAD_PAYLOAD);
        const generated = await generateKeyWithCsr(subject || `CN=${this.opts.serial}`);
        this.key = generated;
        this.objects.delete(Slot.PRIVATE_KEY);
        this.objects.delete(Slot.WRAPPED_KEY);
        return answerBytes(frame, Status.OK, put.bytes16(generated.csrDer));
      }
      case Command.PROVE: {
        const nonce = r.remainder();
        if (nonce.length < 16 || nonce.length > 64) return answerBytes(frame, Status.BAD_PAYLOAD);
        if (!this.key) return answerBytes(frame, Status.NO_KEY);
        return answerBytes(
          frame,
          Status.OK,
          put.bytes16(this.key.spkiDer),
          put.bytes16(signMessage(this.key, proofMessage(nonce))),
        );
      }
      case Command.CONNECT: {
        const host = r.text8();
        const port = r.half();
        const clientId = r.text8();
        r.done();
        if (this.opts.network === false) return answerBytes(frame, Status.UNKNOWN_COMMAND);
        if (!host || port === 0 || !clientId) return answerBytes(frame, Status.BAD_PAYLOAD);
        return this.connect(frame, host, port, clientId);
      }
      case Command.PROVISION: {
        const host = r.text8();
        const port = r.half();
        const clientId = r.text8();
        r.done();
        if (this.opts.network === false) return answerBytes(frame, Status.UNKNOWN_COMMAND);
        if (!host || port === 0 || !clientId) return answerBytes(frame, Status.BAD_PAYLOAD);
        return this.provision(frame, host, port, clientId, impostor);
      }
      default:
        return answerBytes(frame, Status.UNKNOWN_COMMAND);
    }
  }

  /** §4 "First connect": a real MQTT connect with what the device holds, every attempt reported. */
  private async connect(frame: WireFrame, host: string, port: number, clientId: string): Promise<Buffer> {
    const rootCa = this.objects.get(Slot.ROOT_CA);
    const certificate = this.objects.get(Slot.CERTIFICATE);
    if (!rootCa || !certificate) return answerBytes(frame, Status.NOT_FOUND);
    if (!this.key) return answerBytes(frame, Status.NO_KEY);
    const attempts = await firstConnect(
      {
        host,
        port,
        clientId,
        rootCaPem: rootCa.toString('utf8'),
        certificatePem: certificate.toString('utf8'),
        key: this.key.privateKey,
      },
      this.opts.connectPolicy ?? DEVICE_CONNECT_POLICY,
      this.opts.log,
    );
    const last = attempts.at(-1);
    const ok = last?.outcome === 'connack' && last.code === 0;
    return answerBytes(frame, ok ? Status.OK : Status.CONNECT_FAILED, ...attemptFields(attempts));
  }

  /**
   * §4 "Fleet provisioning": with the claim (slots 4 and 5/6) and the fleet settings (slot 7),
   * the device gets its own certificate and thing over MQTT, keeps them (slot 1, its new key
   * current), then makes its first connect as the thing. A device already provisioned this way
   * only connects again (PROVISION is safe to send twice).
   */
  private async provision(
    frame: WireFrame,
    host: string,
    port: number,
    clientId: string,
    /** An `impostor` fault: the parameters that hold its serial present another one. */
    impostor = false,
  ): Promise<Buffer> {
    const rootCa = this.objects.get(Slot.ROOT_CA);
    const claimCert = this.objects.get(Slot.CLAIM_CERTIFICATE);
    const settingsRaw = this.objects.get(Slot.FLEET_SETTINGS);
    if (!rootCa || !claimCert || !settingsRaw) return answerBytes(frame, Status.NOT_FOUND);
    if (!this.claimKey) return answerBytes(frame, Status.NO_KEY);
    let settings: { templateName: string; parameters: Record<string, string>; deviceKey: 'csr' | 'keys' };
    try {
      settings = JSON.parse(settingsRaw.toString('utf8')) as typeof settings;
    } catch {
      return answerBytes(frame, Status.BAD_PAYLOAD);
    }
    if (!this.provisioned) {
      const out = await fleetProvision(
        {
          host,
          port,
          clientId,
          rootCaPem: rootCa.toString('utf8'),
          claimCertificatePem: claimCert.toString('utf8'),
          claimKey: this.claimKey.privateKey,
          templateName: settings.templateName,
          parameters: impostor ? presenting(settings.parameters, this.opts.serial) : settings.parameters,
          mode: settings.deviceKey,
          subject: `CN=${clientId}`,
        },
        this.opts.log,
      );
      if (!out.ok)
        return answerBytes(
          frame,
          out.denied ? Status.PROVISION_DENIED : Status.PROVISION_FAILED,
          put.byte(ProvisionStage[out.stage]),
          put.text8(clip(out.errorCode)),
          put.text8(clip(out.message)),
        );
      this.key = out.key;
      this.objects.set(Slot.CERTIFICATE, Buffer.from(out.certificatePem, 'utf8'));
      this.objects.delete(Slot.PRIVATE_KEY);
      this.objects.delete(Slot.WRAPPED_KEY);
      this.provisioned = { thingName: out.thingName, certificateId: out.certificateId };
    }
    const { thingName, certificateId } = this.provisioned;
    const attempts = await firstConnect(
      {
        host,
        port,
        clientId: thingName,
        rootCaPem: rootCa.toString('utf8'),
        certificatePem: this.objects.get(Slot.CERTIFICATE)!.toString('utf8'),
        key: this.key!.privateKey,
      },
      this.opts.connectPolicy ?? DEVICE_CONNECT_POLICY,
      this.opts.log,
    );
    const last = attempts.at(-1);
    const ok = last?.outcome === 'connack' && last.code === 0;
    return answerBytes(
      frame,
      ok ? Status.OK : Status.CONNECT_FAILED,
      put.text8(thingName),
      put.text8(certificateId),
      ...attemptFields(attempts),
    );
  }

  private commit(frame: WireFrame, slot: number): Buffer {
    const s = this.staging;
    if (!s || s.slot !== slot) {
      // A retransmitted COMMIT whose answer was lost: report what is stored.
      const stored = this.objects.get(slot);
      return stored ? answerBytes(frame, Status.OK, sha256(stored)) : answerBytes(frame, Status.NOT_FOUND);
    }
    this.staging = undefined;
    const data = Buffer.concat(s.data);
    if (s.received !== s.size || !sha256(data).equals(s.sha256))
      return answerBytes(frame, Status.HASH_MISMATCH);
    if (slot === Slot.CLAIM_KEY || slot === Slot.CLAIM_WRAPPED_KEY) {
      try {
        this.claimKey =
          slot === Slot.CLAIM_KEY ? fromPem(data.toString('utf8')) : unwrapKey(this.opts.kek!, data);
      } catch {
        return answerBytes(
          frame,
          slot === Slot.CLAIM_WRAPPED_KEY ? Status.UNWRAP_FAILED : Status.KEY_INVALID,
        );
      }
    }
    // New claim settings mean a device to provision again (a re-flash).
    if (slot === Slot.FLEET_SETTINGS && !this.objects.get(slot)?.equals(data)) this.provisioned = undefined;
    if (slot === Slot.PRIVATE_KEY || slot === Slot.WRAPPED_KEY) {
      try {
        this.key =
          slot === Slot.PRIVATE_KEY ? fromPem(data.toString('utf8')) : unwrapKey(this.opts.kek!, data);
      } catch {
        return answerBytes(frame, slot === Slot.WRAPPED_KEY ? Status.UNWRAP_FAILED : Status.KEY_INVALID);
      }
    }
    this.objects.set(slot, data);
    return answerBytes(frame, Status.OK, sha256(data));
  }
}

/** The attempts of a connect, as CONNECT and PROVISION answers carry them. */
function attemptFields(attempts: AttemptReport[]): Buffer[] {
  return [
    put.byte(attempts.length),
    ...attempts.flatMap((a) => [put.byte(ConnectOutcome[a.outcome]), put.byte(a.code), put.text8(a.reason)]),
  ];
}

/** A str8 field holds at most 120 bytes of UTF-8 here. */
function clip(text: string): string {
  let out = text;
  while (Buffer.byteLength(out, 'utf8') > 120) out = out.slice(0, -1);
  return out;
}

function isSlot(n: number): boolean {
  return (Object.values(Slot) as number[]).includes(n);
}
