/**
 * Driver for the Nordic nRF91 modem AT command set (shared/reference/device-protocols.md A.1).
 * Protocol text comes from the pure helpers in at.ts; this file decides the order of commands,
 * the timeouts and the retries.
 */
import { ProvlineError } from '../../core/index.js';
import {
  AtResponseReader,
  CMNG_TYPE,
  cmngWriteCommand,
  encodeAt,
  keygenCommand,
  mqttConfigCommand,
  mqttConnectCommand,
  parseCmngList,
  parseImei,
  parseKeygen,
  parseMqttEvent,
  sha256Upper,
  type AtResponse,
} from '../protocol/at.js';
import { normalizePem } from '../protocol/pem.js';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  checkCsr,
  connectFailed,
  mismatchError,
  notRetriedPerCommand,
  verifyResult,
  withRetries,
  type CallOptions,
  type ConnectAttempt,
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
  type VerifiedObject,
  type VerifyResult,
  type WriteCredentialsRequest,
  type WriteResult,
} from './driver.js';
import { abortedError, cmeError } from './errors.js';
import { Exchange } from './exchange.js';
import type { Transport } from '../transport/transport.js';

export interface NordicAtOptions {
  /** The sec_tag credentials go into (0..2147483647). */
  secTag: number;
  /** Time for the modem to start answering a command, on top of the bytes' wire time. */
  commandTimeoutMs?: number;
  /** `%KEYGEN` takes seconds on a real modem. */
  keygenTimeoutMs?: number;
  /** Sends of one command while it fails with a retryable error. */
  attempts?: number;
  /** Write-then-verify passes before DEVICE_VERIFY_MISMATCH. */
  writePasses?: number;
  /** How long `AT#XMQTTCON` may take to open the link and get its CONNACK event. */
  connectTimeoutMs?: number;
}

/**
 * First-connect attempts while the link closes without CONNACK, and the pauses before the
 * second and third (the modem does not retry by itself; docs/device-protocol.md §7.1).
 */
const CONNECT_PAUSES_MS = [500, 1_000];
/** SLM's MQTT client: `#XMQTTEVT` types, and the errno of a link that timed out. */
const EVT_CONNECT = 0;
const EVT_DISCONNECT = 1;
const ETIMEDOUT = 116;

/** nrfcloud-utils' default sec_tag, used when the profile sets none. */
export const DEFAULT_SEC_TAG = 16842753;

interface PlannedObject {
  object: CredentialObject;
  type: number;
  text: string;
  sha256: string;
}

export class NordicAtDriver implements DeviceDriver, KeyGenerator, FirstConnector {
  readonly name = 'nordic-at' as const;
  private readonly ex: Exchange<AtResponse>;
  private readonly opts: Required<NordicAtOptions>;
  private prepared = false;

  constructor(transport: Transport, options: NordicAtOptions) {
    if (!Number.isInteger(options.secTag) || options.secTag < 0 || options.secTag > 2147483647) {
      throw new ProvlineError('DRIVER_BAD_SETTINGS', `sec_tag ${options.secTag} is outside 0..2147483647`, {
        kind: 'invalid-input',
      });
    }
    this.opts = {
      commandTimeoutMs: 2_000,
      keygenTimeoutMs: 20_000,
      attempts: 3,
      writePasses: 3,
      connectTimeoutMs: 40_000,
      ...options,
    };
    this.ex = new Exchange(transport, new AtResponseReader());
  }

  async readIdentity(options: CallOptions = {}): Promise<DeviceIdentity> {
    await this.run('AT+CMEE=1', options);
    const imei = await withRetries(
      async () => {
        const lines = await this.run('AT+CGSN', options);
        const v = parseImei(lines);
        if (!v)
          throw new ProvlineError('DEVICE_PROTOCOL_ERROR', 'AT+CGSN did not answer with a 15-digit IMEI', {
            retryable: true,
            details: { lines },
          });
        return v;
      },
      { attempts: this.opts.attempts, retryIf: notRetriedPerCommand },
    );
    const firmware = (await this.run('AT+CGMR', options))[0];
    const model = (await this.run('AT+CGMM', options))[0];
    return { serial: imei, ...(model ? { model } : {}), ...(firmware ? { firmware } : {}) };
  }

  async verify(request: Credentials & CallOptions): Promise<VerifyResult> {
    return this.compare(this.plan(request), request);
  }

  async writeCredentials(request: WriteCredentialsRequest): Promise<WriteResult> {
    const planned = this.plan(request);
    await this.prepare(request);
    const before = this.ex.bytesOut;
    let pending = planned;
    let result: VerifyResult | undefined;
    for (let pass = 1; pass <= this.opts.writePasses; pass++) {
      for (const p of pending) await this.writeObject(p, request);
      result = await this.compare(planned, request);
      if (result.ok) return { verify: result, bytesWritten: this.ex.bytesOut - before, passes: pass };
      pending = planned.filter((p) => !result!.objects.find((o) => o.object === p.object)?.match);
    }
    throw mismatchError(result!, this.opts.writePasses);
  }

  async generateKey(request: GenerateKeyRequest): Promise<GeneratedKey> {
    await this.prepare(request);
    await this.deleteIfPresent(CMNG_TYPE.privateKey, request);
    const answer = await withRetries(
      async () => {
        const lines = await this.run(keygenCommand(this.opts.secTag, request.subject), {
          ...request,
          timeoutMs: this.opts.keygenTimeoutMs,
          retryCredentialExists: CMNG_TYPE.privateKey,
        });
        const parsed = parseKeygen(lines);
        if (!parsed)
          throw new ProvlineError(
            'DEVICE_PROTOCOL_ERROR',
            'AT%KEYGEN answered without a usable %KEYGEN line',
            { retryable: true, hint: "the modem's AT buffer may be too small for the CSR" },
          );
        return { ...parsed, csrPem: await checkCsr(parsed.csrDer) };
      },
      { attempts: this.opts.attempts, retryIf: notRetriedPerCommand },
    );
    return { csrDer: answer.csrDer, csrPem: answer.csrPem, attestation: answer.cose };
  }

  /**
   * The first connect through the Serial LTE Modem's MQTT client: modem online, client id,
   * `AT#XMQTTCON` with the sec_tag just written, and the `#XMQTTEVT` that follows; tried again
   * (at most 3 attempts) while the link closes without CONNACK. A CONNACK 0 is followed by a
   * clean disconnect.
   */
  async firstConnect(request: FirstConnectRequest): Promise<FirstConnectResult> {
    await this.run('AT+CMEE=1', request);
    await this.run('AT+CFUN=1', request);
    this.prepared = false; // online now: credential work needs AT+CFUN=4 again
    await this.run(mqttConfigCommand(request.clientId, 60, true), request);
    const attempts: ConnectAttempt[] = [];
    for (let n = 0; ; n++) {
      const attempt = await this.connectOnce(request);
      attempts.push(attempt);
      if (attempt.outcome === 'connack' && attempt.code === 0) {
        await this.run('AT#XMQTTCON=0', request);
        return { attempts };
      }
      const pauseMs = CONNECT_PAUSES_MS[n];
      if (attempt.outcome !== 'closed' || pauseMs === undefined) throw connectFailed(request, attempts);
      await sleep(pauseMs, undefined, request.signal ? { signal: request.signal } : {}).catch(() => {
        throw abortedError('the first connect');
      });
    }
  }

  /** One `AT#XMQTTCON=1,…`: its OK (or ERROR) and the connect event, in either order. */
  private async connectOnce(request: FirstConnectRequest): Promise<ConnectAttempt> {
    const command = mqttConnectCommand(request.host, request.port, this.opts.secTag);
    const bytes = encodeAt(command);
    let final: AtResponse['final'] | undefined;
    let event: { type: number; result: number } | undefined;
    try {
      await this.ex.request(bytes, {
        what: 'AT#XMQTTCON=1',
        timeoutMs: this.opts.connectTimeoutMs + Math.ceil(this.ex.wireMs(bytes.length + 64) * 2),
        ...(request.signal ? { signal: request.signal } : {}),
        accept: (r) => {
          if (r.final.kind === 'urc') {
            const e = parseMqttEvent(r.lines[0] ?? '');
            if (e && (e.type === EVT_CONNECT || e.type === EVT_DISCONNECT)) event = e;
          } else final = r.final;
          return (
            (final !== undefined && final.kind !== 'ok') || (final?.kind === 'ok' && event !== undefined)
          );
        },
      });
    } catch (e) {
      if (!(e instanceof ProvlineError) || e.code !== 'DEVICE_TIMEOUT') throw e;
      // No answer in time: leave the modem without a half-open client.
      await this.send('AT#XMQTTCON=0', request).catch(() => undefined);
      return {
        outcome: 'timeout',
        reason: `no answer to AT#XMQTTCON within ${this.opts.connectTimeoutMs} ms`,
      };
    }
    if (final?.kind !== 'ok')
      return {
        outcome: 'network',
        reason: `the modem answered ${final?.kind === 'cme' ? `+CME ERROR: ${final.code}` : 'ERROR'}: it could not open the link (host name, route or TLS handshake)`,
      };
    const e = event!;
    if (e.type === EVT_CONNECT && e.result >= 0) return { outcome: 'connack', code: e.result };
    if (e.result === -ETIMEDOUT) return { outcome: 'timeout', reason: `#XMQTTEVT: ${e.type},${e.result}` };
    return {
      outcome: 'closed',
      reason: `the link closed before any CONNACK (#XMQTTEVT: ${e.type},${e.result})`,
    };
  }

  close(): Promise<void> {
    this.ex.detach();
    return Promise.resolve();
  }

  /** Numeric errors on, modem offline: credential work is refused while it is active (518). */
  private async prepare(options: CallOptions): Promise<void> {
    if (this.prepared) return;
    await this.run('AT+CMEE=1', options);
    await this.run('AT+CFUN=4', options);
    this.prepared = true;
  }

  private plan(c: Credentials): PlannedObject[] {
    if (c.wrappedKey !== undefined) {
      throw new ProvlineError(
        'DRIVER_UNSUPPORTED_DELIVERY',
        'the nordic-at driver cannot write wrapped keys: nRF91 modems hold no transport KEK',
        {
          kind: 'invalid-input',
          hint: 'use keyDelivery "device" (on-modem keygen) or "plain" for nordic-at profiles',
        },
      );
    }
    const items: [CredentialObject, number, string | undefined][] = [
      ['rootCa', CMNG_TYPE.rootCa, c.rootCaPem],
      ['certificate', CMNG_TYPE.clientCert, c.certificatePem],
      ['privateKey', CMNG_TYPE.privateKey, c.privateKeyPem],
    ];
    return items
      .filter((i): i is [CredentialObject, number, string] => i[2] !== undefined)
      .map(([object, type, pem]) => {
        const text = normalizePem(pem);
        return { object, type, text, sha256: sha256Upper(text) };
      });
  }

  private async compare(planned: PlannedObject[], options: CallOptions): Promise<VerifyResult> {
    const lines = await this.run(`AT%CMNG=1,${this.opts.secTag}`, options);
    const listed = parseCmngList(lines).filter((e) => e.secTag === this.opts.secTag);
    const objects: VerifiedObject[] = planned.map((p) => {
      const actual = listed.find((e) => e.type === p.type)?.sha256 ?? null;
      return { object: p.object, expected: p.sha256, actual, match: actual === p.sha256 };
    });
    return verifyResult(objects);
  }

  private async writeObject(p: PlannedObject, request: WriteCredentialsRequest): Promise<void> {
    const command = cmngWriteCommand(this.opts.secTag, p.type, p.text);
    request.onProgress?.({ object: p.object, bytesSent: 0, bytesTotal: p.text.length });
    await this.run(command, { ...request, retryCredentialExists: p.type });
    request.onProgress?.({ object: p.object, bytesSent: p.text.length, bytesTotal: p.text.length });
  }

  private async deleteIfPresent(type: number, options: CallOptions): Promise<void> {
    try {
      await this.run(`AT%CMNG=3,${this.opts.secTag},${type}`, options);
    } catch (e) {
      if (!(e instanceof ProvlineError && e.code === 'DEVICE_CREDENTIAL_NOT_FOUND')) throw e;
    }
  }

  /**
   * Sends one command with bounded retries. Remedies before a retry: 518 → AT+CFUN=4;
   * 519 on a write → delete that credential type first.
   */
  private async run(
    command: string,
    options: CallOptions & { timeoutMs?: number; retryCredentialExists?: number },
  ): Promise<string[]> {
    return withRetries(() => this.send(command, options), {
      attempts: this.opts.attempts,
      retryIf: (e) => e.code !== 'DEVICE_CREDENTIAL_EXISTS' || options.retryCredentialExists !== undefined,
      onRetry: async (e) => {
        if (e.code === 'DEVICE_NOT_OFFLINE') await this.send('AT+CFUN=4', options);
        if (e.code === 'DEVICE_CREDENTIAL_EXISTS' && options.retryCredentialExists !== undefined)
          await this.deleteIfPresent(options.retryCredentialExists, options);
      },
    });
  }

  private async send(command: string, options: CallOptions & { timeoutMs?: number }): Promise<string[]> {
    const bytes = encodeAt(command);
    // Time for the command and a generous answer to cross the line, plus the modem's own time.
    const timeoutMs =
      (options.timeoutMs ?? this.opts.commandTimeoutMs) + Math.ceil(this.ex.wireMs(bytes.length + 512) * 2);
    const what = command.length > 40 ? `${command.slice(0, 40)}…` : command;
    const response = await this.ex.request(bytes, {
      what,
      timeoutMs,
      ...(options.signal ? { signal: options.signal } : {}),
      // An unsolicited result code (`#XMQTTEVT`) belongs to no command's answer.
      accept: (r) => r.final.kind !== 'urc',
    });
    if (response.final.kind === 'ok') return response.lines;
    if (response.final.kind === 'cme') throw cmeError(response.final.code, what);
    throw new ProvlineError('DEVICE_COMMAND_ERROR', `the modem answered ERROR to ${what}`, {
      retryable: false,
      details: { command: what },
    });
  }
}
