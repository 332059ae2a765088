/**
 * A simulated device's own first MQTT connect: mutual TLS with node:tls and MQTT 3.1.1 packets
 * from mqtt-packet, nothing more. The device checks the server's certificate against the root
 * CA it was given and the endpoint's host name, presents its certificate (and any chain that
 * follows the leaf in the PEM) with the key it holds, sends CONNECT with the client id, waits
 * for the CONNACK, and on CONNACK 0 disconnects cleanly.
 *
 * A link the server closes before any CONNACK (AWS IoT's way of refusing a certificate, and of
 * ending the first connect of a just-in-time registration) is tried again after a short pause,
 * a bounded number of times; every attempt is reported. Written from docs/device-protocol.md
 * ("First connect"), apart from the station's drivers.
 */
import { isIP } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { KeyObject } from 'node:crypto';
import mqtt, { type Packet } from 'mqtt-packet';

export type AttemptOutcome = 'connack' | 'closed' | 'tls' | 'timeout' | 'network';

export interface AttemptReport {
  outcome: AttemptOutcome;
  /** The CONNACK return code (outcome `connack`), else 0. */
  code: number;
  /** Empty after CONNACK 0. */
  reason: string;
}

/** An accepted connection kept open (`hold`): the device ends it when told to. */
export interface HeldConnection {
  /** Sends DISCONNECT and closes the link. */
  disconnect(): Promise<void>;
  /** Resolves when the link closes, whoever closed it. */
  readonly closed: Promise<void>;
}

export interface DeviceConnectRequest {
  host: string;
  port: number;
  clientId: string;
  rootCaPem: string;
  /** The device certificate, optionally followed by its chain. */
  certificatePem: string;
  key: KeyObject;
}

export interface ConnectPolicy {
  /** Attempts while the link closes without CONNACK (default 3). */
  attempts: number;
  /** Pauses before the 2nd, 3rd, … attempt. */
  pausesMs: number[];
  /** How long to wait for the CONNACK once the link is open. */
  connackTimeoutMs: number;
  /** Keep-alive announced in CONNECT, seconds. */
  keepAliveS: number;
}

export const DEVICE_CONNECT_POLICY: ConnectPolicy = {
  attempts: 3,
  pausesMs: [500, 1_000],
  connackTimeoutMs: 10_000,
  keepAliveS: 60,
};

/** Connects until CONNACK 0, a final failure, or the attempts run out; every attempt in order. */
export async function firstConnect(
  req: DeviceConnectRequest,
  policy: ConnectPolicy = DEVICE_CONNECT_POLICY,
  log?: (line: string) => void,
): Promise<AttemptReport[]> {
  const attempts: AttemptReport[] = [];
  for (let n = 0; n < policy.attempts; n++) {
    if (n > 0) await new Promise((r) => setTimeout(r, policy.pausesMs[n - 1] ?? policy.pausesMs.at(-1) ?? 0));
    const a = await connectOnce(req, policy);
    log?.(
      `mqtt: attempt ${n + 1} to ${req.host}:${req.port} as ${req.clientId}: ${a.outcome} ${a.code} ${a.reason}`,
    );
    attempts.push(a);
    if (a.outcome !== 'closed') break;
  }
  return attempts;
}

/**
 * One attempt: TLS, CONNECT, CONNACK. An accepted connection is ended with DISCONNECT at once,
 * or with `hold` handed back open (a modem stays connected until `AT#XMQTTCON=0`).
 */
export function connectOnce(
  req: DeviceConnectRequest,
  policy: ConnectPolicy,
  options: { hold?: boolean } = {},
): Promise<AttemptReport & { held?: HeldConnection }> {
  return new Promise((resolve) => {
    let secured = false;
    let settled = false;
    let socket: TLSSocket | undefined;
    const finish = (a: AttemptReport & { held?: HeldConnection }): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (a.outcome !== 'connack' || a.code !== 0) socket?.destroy();
      resolve({ ...a, reason: clip(a.reason) });
    };
    const timer = setTimeout(
      () =>
        finish({
          outcome: 'timeout',
          code: 0,
          reason: secured
            ? `no CONNACK within ${policy.connackTimeoutMs} ms`
            : `the link did not open within ${policy.connackTimeoutMs} ms`,
        }),
      policy.connackTimeoutMs,
    );
    try {
      socket = tlsConnect({
        host: req.host,
        port: req.port,
        ...(isIP(req.host) ? {} : { servername: req.host }),
        ca: [req.rootCaPem],
        cert: req.certificatePem,
        key: req.key.export({ type: 'pkcs8', format: 'pem' }),
        minVersion: 'TLSv1.2',
      });
    } catch (e) {
      finish({ outcome: 'tls', code: 0, reason: `cannot use the credentials: ${(e as Error).message}` });
      return;
    }
    const parser = mqtt.parser({ protocolVersion: 4 });
    parser.on('packet', (p: Packet) => {
      if (p.cmd !== 'connack') return;
      const code = p.returnCode ?? p.reasonCode ?? 0;
      if (code === 0 && options.hold) {
        const s = socket;
        const closed = new Promise<void>((r) => s.once('close', () => r()));
        const held: HeldConnection = {
          closed,
          disconnect: async () => {
            if (!s.destroyed) s.end(mqtt.generate({ cmd: 'disconnect' }));
            await closed;
          },
        };
        finish({ outcome: 'connack', code: 0, reason: '', held });
      } else if (code === 0) {
        socket.end(mqtt.generate({ cmd: 'disconnect' }));
        finish({ outcome: 'connack', code: 0, reason: '' });
      } else
        finish({ outcome: 'connack', code, reason: `the server refused the connection (CONNACK ${code})` });
    });
    parser.on('error', (e: Error) =>
      finish({ outcome: 'closed', code: 0, reason: `the server sent a malformed packet (${e.message})` }),
    );
    socket.on('secureConnect', () => {
      secured = true;
      socket.write(
        mqtt.generate({
          cmd: 'connect',
          protocolId: 'MQTT',
          protocolVersion: 4,
          clean: true,
          clientId: req.clientId,
          keepalive: policy.keepAliveS,
        }),
      );
    });
    socket.on('data', (chunk: Buffer) => parser.parse(chunk));
    socket.on('error', (e: NodeJS.ErrnoException) => {
      if (secured) finish({ outcome: 'closed', code: 0, reason: `the link failed: ${e.code ?? e.message}` });
      else finish(handshakeFailure(e));
    });
    socket.on('close', () =>
      finish(
        secured
          ? { outcome: 'closed', code: 0, reason: 'the server closed the connection without CONNACK' }
          : { outcome: 'tls', code: 0, reason: 'the server closed the link during the TLS handshake' },
      ),
    );
  });
}

/** A failure before the TLS handshake completed: the network, or TLS itself. */
function handshakeFailure(e: NodeJS.ErrnoException): AttemptReport {
  const code = e.code ?? '';
  if (['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT'].includes(code))
    return { outcome: 'network', code: 0, reason: `${code}: the endpoint cannot be reached` };
  return { outcome: 'tls', code: 0, reason: `${code ? `${code}: ` : ''}${e.message}` };
}

/** The answer carries at most 120 bytes of reason. */
function clip(text: string): string {
  let out = text;
  while (Buffer.byteLength(out, 'utf8') > 120) out = out.slice(0, -1);
  return out;
}
