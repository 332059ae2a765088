/**
 * Driver for provline-serial-v1, our framed protocol for custom firmware
 * (docs/device-protocol.md). Framing and payload codecs are in frame.ts; this file sequences
 * commands, retransmits after timeouts and NAKs, and resumes chunked writes from the device's
 * acknowledged offset.
 */
import { createHash } from 'node:crypto';
import { ProvlineError } from '../../core/index.js';
import { normalizePem } from '../protocol/pem.js';
import {
  checkCsr,
  checkPossession,
  connectFailed,
  mismatchError,
  notRetriedPerCommand,
  verifyResult,
  withRetries,
  type CallOptions,
  type ClaimCredentials,
  type ClaimProvisioner,
  type CredentialObject,
  type Credentials,
  type DeviceDriver,
  type DeviceIdentity,
  type FirstConnectRequest,
  type FirstConnectResult,
  type FirstConnector,
  type GenerateKeyRequest,
  type GeneratedKey,
  type KeyGenerator,
  type PossessionProof,
  type PossessionProver,
  type ProvePossessionRequest,
  type ProvisionRequest,
  type ProvisionResult,
  type WriteProgress,
  type VerifyResult,
  type WriteCredentialsRequest,
  type WriteResult,
} from './driver.js';
import { protocolError, v1StatusError } from './errors.js';
import { Exchange } from './exchange.js';
import {
  CAP,
  CMD,
  FrameDecoder,
  MAX_PAYLOAD,
  NAK,
  PROTOCOL_VERSION,
  PayloadReader,
  RESPONSE_BIT,
  PayloadError,
  SLOT,
  V1_STATUS,
  bytes16,
  connectPayload,
  encodeFrame,
  popMessage,
  readConnectAttempts,
  readProvisionFailure,
  u32,
  u8,
  type DecodeEvent,
  type SlotName,
} from '../protocol/frame.js';
import type { Transport } from '../transport/transport.js';

export interface SerialV1Options {
  commandTimeoutMs?: number;
  keygenTimeoutMs?: number;
  /** Sends of one frame while it times out or is NAKed. */
  attempts?: number;
  /** Write-then-verify passes before DEVICE_VERIFY_MISMATCH. */
  writePasses?: number;
  /** Data bytes per CHUNK frame (capped by the device's max payload). */
  chunkSize?: number;
  /** How long the device may take to answer CONNECT (its attempts and pauses included). */
  connectTimeoutMs?: number;
}

interface Session {
  version: number;
  maxPayload: number;
  caps: number;
}

interface Planned {
  object: CredentialObject;
  slot: number;
  data: Buffer;
  sha256: Buffer;
}

interface Reply {
  status: number;
  body: PayloadReader;
}

const CHUNK_HEADER = 5; // slot u8 + offset u32

/** Sends of one CONNECT: a device that connects twice does no harm, but each try takes long. */
const CONNECT_SENDS = 2;

export class SerialV1Driver
  implements DeviceDriver, KeyGenerator, PossessionProver, FirstConnector, ClaimProvisioner
{
  readonly name = 'provline-serial-v1' as const;
  private readonly ex: Exchange<DecodeEvent>;
  private readonly opts: Required<SerialV1Options>;
  private seq = 0;
  private session: Session | undefined;

  constructor(transport: Transport, options: SerialV1Options = {}) {
    this.opts = {
      commandTimeoutMs: 1_000,
      keygenTimeoutMs: 10_000,
      attempts: 4,
      writePasses: 3,
      chunkSize: 512,
      connectTimeoutMs: 40_000,
      ...options,
    };
    this.ex = new Exchange(transport, new FrameDecoder());
  }

  /** HELLO: agrees on a protocol version and learns the device's limits and abilities. */
  async negotiate(options: CallOptions = {}): Promise<Session> {
    if (this.session) return this.session;
    const r = ok(
      await this.call(CMD.HELLO, Buffer.from([PROTOCOL_VERSION, PROTOCOL_VERSION]), 'HELLO', options),
      'HELLO',
    );
    const session = { version: r.u8(), maxPayload: r.u16(), caps: r.u32() };
    if (session.version !== PROTOCOL_VERSION)
      throw protocolError(`the device chose protocol version ${session.version}`, {}, false);
    this.session = session;
    return session;
  }

  async readIdentity(options: CallOptions = {}): Promise<DeviceIdentity> {
    const s = await this.negotiate(options);
    const r = ok(await this.call(CMD.IDENTITY, Buffer.alloc(0), 'IDENTITY', options), 'IDENTITY');
    const serial = r.str8();
    const model = r.str8();
    const firmware = r.str8();
    return { serial, model, firmware, protocolVersion: s.version };
  }

  async verify(request: Credentials & CallOptions): Promise<VerifyResult> {
    await this.negotiate(request);
    return this.compare(this.plan(request), request);
  }

  async writeCredentials(request: WriteCredentialsRequest): Promise<WriteResult> {
    return this.writePlanned(this.plan(request), request);
  }

  async verifyClaim(request: ClaimCredentials & CallOptions): Promise<VerifyResult> {
    await this.negotiate(request);
    return this.compare(this.planClaim(request), request);
  }

  async writeClaim(
    request: ClaimCredentials & CallOptions & { onProgress?: (p: WriteProgress) => void },
  ): Promise<WriteResult> {
    const s = await this.negotiate(request);
    if (!(s.caps & CAP.fleet))
      throw new ProvlineError(
        'DRIVER_UNSUPPORTED',
        'this device cannot provision itself by claim (no fleet capability)',
        {
          kind: 'invalid-input',
          hint: 'the claim strategy needs firmware with the FLEET capability (docs/device-protocol.md)',
        },
      );
    return this.writePlanned(this.planClaim(request), request);
  }

  /** PROVISION: the device provisions itself with its claim and connects as its new thing. */
  async provision(request: ProvisionRequest): Promise<ProvisionResult> {
    const s = await this.negotiate(request);
    if (!(s.caps & CAP.fleet))
      throw new ProvlineError('DRIVER_UNSUPPORTED', 'this device cannot provision itself by claim', {
        kind: 'invalid-input',
      });
    const reply = await this.call(CMD.PROVISION, connectPayload(request), 'PROVISION', {
      ...request,
      // The fleet exchange (three answers) and then a first connect's attempts.
      timeoutMs: this.opts.connectTimeoutMs * 2,
      sends: CONNECT_SENDS,
    });
    try {
      if (reply.status === V1_STATUS.PROVISION_DENIED || reply.status === V1_STATUS.PROVISION_FAILED) {
        const f = readProvisionFailure(reply.body);
        const denied = reply.status === V1_STATUS.PROVISION_DENIED;
        throw new ProvlineError(
          denied ? 'DEVICE_PROVISION_DENIED' : 'DEVICE_PROVISION_FAILED',
          `the device's fleet provisioning ${denied ? 'was refused' : 'failed'} at ${f.stage}: ${f.message}${f.errorCode ? ` (${f.errorCode})` : ''}`,
          {
            retryable: false,
            hint: denied
              ? "`provline claim status --profile <p>` shows the hook's reason; on the stand-in `provline emulator events --client-id <thing>`"
              : 'on the stand-in `provline emulator events --client-id <thing>` says why',
            details: { stage: f.stage, errorCode: f.errorCode, deviceMessage: f.message },
          },
        );
      }
      if (reply.status !== V1_STATUS.OK && reply.status !== V1_STATUS.CONNECT_FAILED)
        throw v1StatusError(reply.status, 'PROVISION');
      const thingName = reply.body.str8();
      const certificateId = reply.body.str8();
      const attempts = readConnectAttempts(reply.body).map((a) => ({
        outcome: a.outcome,
        ...(a.outcome === 'connack' ? { code: a.code } : {}),
        ...(a.reason ? { reason: a.reason } : {}),
      }));
      const last = attempts.at(-1);
      if (reply.status === V1_STATUS.OK && last?.outcome === 'connack' && last.code === 0)
        return { thingName, certificateId, attempts };
      throw connectFailed({ ...request, clientId: thingName || request.clientId }, attempts);
    } catch (e) {
      if (e instanceof PayloadError)
        throw protocolError(`malformed PROVISION answer: ${e.message}`, {}, false);
      throw e;
    }
  }

  private async writePlanned(
    planned: Planned[],
    request: CallOptions & { onProgress?: (p: WriteProgress) => void },
  ): Promise<WriteResult> {
    const session = await this.negotiate(request);
    if (
      planned.some((p) => p.slot === SLOT.wrappedKey || p.slot === SLOT.claimWrappedKey) &&
      !(session.caps & CAP.wrappedKeys)
    ) {
      throw new ProvlineError('DRIVER_UNSUPPORTED_DELIVERY', 'this device cannot unwrap keys (no KEK)', {
        kind: 'invalid-input',
      });
    }
    const before = this.ex.bytesOut;
    let pending = planned;
    let result: VerifyResult | undefined;
    for (let pass = 1; pass <= this.opts.writePasses; pass++) {
      for (const p of pending)
        await withRetries(() => this.writeObject(p, request), {
          attempts: this.opts.attempts,
          retryIf: notRetriedPerCommand,
        });
      result = await this.compare(planned, request);
      if (result.ok) return { verify: result, bytesWritten: this.ex.bytesOut - before, passes: pass };
      pending = planned.filter((p) => !result!.objects.find((o) => o.object === p.object)?.match);
    }
    throw mismatchError(result!, this.opts.writePasses);
  }

  async generateKey(request: GenerateKeyRequest): Promise<GeneratedKey> {
    const s = await this.negotiate(request);
    if (!(s.caps & CAP.keygen))
      throw new ProvlineError('DRIVER_UNSUPPORTED', 'this device cannot generate keys', {
        kind: 'invalid-input',
      });
    return withRetries(
      async () => {
        const payload = Buffer.concat([u8(1), bytes16(Buffer.from(request.subject, 'utf8'))]);
        const r = ok(
          await this.call(CMD.KEYGEN, payload, 'KEYGEN', {
            ...request,
            timeoutMs: this.opts.keygenTimeoutMs,
          }),
          'KEYGEN',
        );
        const csrDer = r.bytes16();
        return { csrDer, csrPem: await checkCsr(csrDer) };
      },
      { attempts: this.opts.attempts, retryIf: notRetriedPerCommand },
    );
  }

  async provePossession(request: ProvePossessionRequest): Promise<PossessionProof> {
    const s = await this.negotiate(request);
    if (!(s.caps & CAP.prove))
      throw new ProvlineError('DRIVER_UNSUPPORTED', 'this device cannot prove possession', {
        kind: 'invalid-input',
      });
    if (request.nonce.length < 16 || request.nonce.length > 64)
      throw new Error('the nonce must be 16..64 bytes');
    const r = ok(await this.call(CMD.PROVE, Buffer.from(request.nonce), 'PROVE', request), 'PROVE');
    const proof = { publicKeyDer: r.bytes16(), signature: r.bytes16() };
    checkPossession(popMessage(request.nonce), proof, request.certificatePem);
    return proof;
  }

  /** CONNECT: the device connects to the endpoint itself and reports every attempt. */
  async firstConnect(request: FirstConnectRequest): Promise<FirstConnectResult> {
    const s = await this.negotiate(request);
    if (!(s.caps & CAP.connect))
      throw new ProvlineError(
        'DEVICE_UNSUPPORTED_COMMAND',
        'this device cannot connect to MQTT (its CONNECT capability is clear)',
        {
          retryable: false,
          hint: 'set `station.firstConnect: false` in the profile for devices without a network link',
        },
      );
    const reply = await this.call(CMD.CONNECT, connectPayload(request), 'CONNECT', {
      ...request,
      timeoutMs: this.opts.connectTimeoutMs,
      sends: CONNECT_SENDS,
    });
    if (reply.status !== V1_STATUS.OK && reply.status !== V1_STATUS.CONNECT_FAILED)
      throw v1StatusError(reply.status, 'CONNECT');
    let attempts;
    try {
      attempts = readConnectAttempts(reply.body).map((a) => ({
        outcome: a.outcome,
        ...(a.outcome === 'connack' ? { code: a.code } : {}),
        ...(a.reason ? { reason: a.reason } : {}),
      }));
    } catch (e) {
      if (e instanceof PayloadError) throw protocolError(`malformed CONNECT answer: ${e.message}`, {}, false);
      throw e;
    }
    const last = attempts.at(-1);
    const accepted = last?.outcome === 'connack' && last.code === 0;
    if (reply.status === V1_STATUS.OK && accepted) return { attempts };
    if (reply.status === V1_STATUS.OK)
      throw protocolError('the device answered OK to CONNECT without a CONNACK 0', { attempts }, false);
    throw connectFailed(request, attempts);
  }

  close(): Promise<void> {
    this.ex.detach();
    return Promise.resolve();
  }

  private planClaim(c: ClaimCredentials): Planned[] {
    const items: [CredentialObject, number, Buffer | undefined][] = [
      ['rootCa', SLOT.rootCa, Buffer.from(normalizePem(c.rootCaPem), 'utf8')],
      ['claimCertificate', SLOT.claimCertificate, Buffer.from(normalizePem(c.claimCertificatePem), 'utf8')],
      [
        'claimKey',
        SLOT.claimKey,
        c.claimPrivateKeyPem === undefined
          ? undefined
          : Buffer.from(normalizePem(c.claimPrivateKeyPem), 'utf8'),
      ],
      [
        'claimWrappedKey',
        SLOT.claimWrappedKey,
        c.claimWrappedKey === undefined
          ? undefined
          : typeof c.claimWrappedKey === 'string'
            ? Buffer.from(c.claimWrappedKey, 'base64')
            : Buffer.from(c.claimWrappedKey),
      ],
      ['fleetSettings', SLOT.fleetSettings, Buffer.from(JSON.stringify(c.fleet), 'utf8')],
    ];
    return items
      .filter((i): i is [CredentialObject, number, Buffer] => i[2] !== undefined)
      .map(([object, slot, data]) => ({
        object,
        slot,
        data,
        sha256: createHash('sha256').update(data).digest(),
      }));
  }

  private plan(c: Credentials): Planned[] {
    const items: [CredentialObject, SlotName, Buffer | undefined][] = [
      ['rootCa', 'rootCa', Buffer.from(normalizePem(c.rootCaPem), 'utf8')],
      ['certificate', 'certificate', Buffer.from(normalizePem(c.certificatePem), 'utf8')],
      [
        'privateKey',
        'privateKey',
        c.privateKeyPem === undefined ? undefined : Buffer.from(normalizePem(c.privateKeyPem), 'utf8'),
      ],
      [
        'wrappedKey',
        'wrappedKey',
        c.wrappedKey === undefined
          ? undefined
          : typeof c.wrappedKey === 'string'
            ? Buffer.from(c.wrappedKey, 'base64')
            : Buffer.from(c.wrappedKey),
      ],
    ];
    return items
      .filter((i): i is [CredentialObject, SlotName, Buffer] => i[2] !== undefined)
      .map(([object, slot, data]) => ({
        object,
        slot: SLOT[slot],
        data,
        sha256: createHash('sha256').update(data).digest(),
      }));
  }

  private async compare(planned: Planned[], options: CallOptions): Promise<VerifyResult> {
    const objects = [];
    for (const p of planned) {
      const reply = await this.call(CMD.READ_HASH, u8(p.slot), 'READ_HASH', options);
      let actual: string | null = null;
      if (reply.status === V1_STATUS.OK) {
        reply.body.u32();
        actual = reply.body.bytes(32).toString('hex').toUpperCase();
      } else if (reply.status !== V1_STATUS.NOT_FOUND) throw v1StatusError(reply.status, 'READ_HASH');
      const expected = p.sha256.toString('hex').toUpperCase();
      objects.push({ object: p.object, expected, actual, match: actual === expected });
    }
    return verifyResult(objects);
  }

  /** BEGIN, CHUNKs from the acknowledged offset, COMMIT (device checks the SHA-256). */
  private async writeObject(
    p: Planned,
    request: CallOptions & { onProgress?: (p: WriteProgress) => void },
  ): Promise<void> {
    const begin = Buffer.concat([u8(p.slot), u32(p.data.length), p.sha256]);
    ok(await this.call(CMD.BEGIN, begin, 'BEGIN', request), 'BEGIN');
    const chunkSize = Math.min(this.opts.chunkSize, (this.session?.maxPayload ?? MAX_PAYLOAD) - CHUNK_HEADER);
    let offset = 0;
    let stalls = 0;
    while (offset < p.data.length) {
      const data = p.data.subarray(offset, offset + chunkSize);
      const reply = await this.call(
        CMD.CHUNK,
        Buffer.concat([u8(p.slot), u32(offset), data]),
        'CHUNK',
        request,
      );
      if (reply.status !== V1_STATUS.OK && reply.status !== V1_STATUS.BAD_OFFSET)
        throw v1StatusError(reply.status, 'CHUNK');
      const next = reply.body.u32();
      if (next > p.data.length)
        throw protocolError(`the device acknowledged offset ${next} of a ${p.data.length}-byte object`);
      if (reply.status === V1_STATUS.BAD_OFFSET && ++stalls > this.opts.attempts)
        throw v1StatusError(reply.status, 'CHUNK');
      offset = next;
      request.onProgress?.({ object: p.object, bytesSent: offset, bytesTotal: p.data.length });
    }
    const r = ok(await this.call(CMD.COMMIT, u8(p.slot), 'COMMIT', request), 'COMMIT');
    const stored = r.bytes(32);
    if (!stored.equals(p.sha256))
      throw new ProvlineError(
        'DEVICE_HASH_MISMATCH',
        `the device committed ${p.object} with a different SHA-256`,
        { retryable: true },
      );
  }

  /**
   * One command frame and its response, retransmitted (with a fresh sequence number) after a
   * timeout, a NAK or BUSY. Other statuses are returned for the caller to judge.
   */
  private async call(
    type: number,
    payload: Buffer,
    what: string,
    options: CallOptions & { timeoutMs?: number; sends?: number },
  ): Promise<Reply> {
    return withRetries(
      async () => {
        const seq = (this.seq = (this.seq + 1) & 0xff);
        const frame = encodeFrame({ type, seq, payload });
        const timeoutMs =
          (options.timeoutMs ?? this.opts.commandTimeoutMs) +
          Math.ceil(this.ex.wireMs(frame.length + MAX_PAYLOAD + 10) * 2);
        const ev = await this.ex.request(frame, {
          what,
          timeoutMs,
          ...(options.signal ? { signal: options.signal } : {}),
          accept: (e) =>
            e.kind === 'frame' &&
            (e.frame.type === NAK || (e.frame.type === (type | RESPONSE_BIT) && e.frame.seq === seq)),
        });
        if (ev.kind !== 'frame') throw protocolError('damaged frame');
        if (ev.frame.type === NAK) throw v1StatusError(V1_STATUS.BAD_FRAME, what);
        if (ev.frame.payload.length < 1) throw protocolError(`empty ${what} response`);
        const status = ev.frame.payload[0]!;
        if (status === V1_STATUS.BUSY) throw v1StatusError(status, what);
        return { status, body: new PayloadReader(ev.frame.payload.subarray(1)) };
      },
      { attempts: Math.min(options.sends ?? this.opts.attempts, this.opts.attempts) },
    );
  }
}

function ok(reply: Reply, what: string): PayloadReader {
  if (reply.status !== V1_STATUS.OK) throw v1StatusError(reply.status, what);
  return reply.body;
}
