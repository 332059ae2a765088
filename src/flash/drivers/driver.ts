/**
 * The driver contract a station uses to provision one device, whatever its command set.
 *
 * A station calls, per device:
 *   1. `readIdentity()`            → the serial/IMEI to look the bundle up by;
 *   2. `verify(credentials)`       → already provisioned? (hash read-back; nothing written);
 *   3. `writeCredentials(request)` → writes, then verifies from the device's own answer, or throws;
 *   4. if `canProvePossession(d)`: `provePossession({ nonce, certificatePem })`;
 *   5. for device-generated keys, `canGenerateKey(d)`: `generateKey({ subject })` → CSR, register
 *      it, then `writeCredentials` with the issued certificate (no private key);
 *   6. if `canConnect(d)` (and the profile wants it): `firstConnect({ host, port, clientId })`, the
 *      device's own first MQTT connect with the credentials just written.
 * Every call takes an optional AbortSignal. Failures are ProvlineErrors with stable codes
 * (drivers/errors.ts); `retryable` says whether the station may try the same device again.
 */
import 'reflect-metadata';
import { Pkcs10CertificateRequest, X509Certificate } from '@peculiar/x509';
import { createPublicKey, verify as verifySignature } from 'node:crypto';
import { ProvlineError, isProvlineError } from '../../core/index.js';
import type { DriverName } from '../../config/index.js';

export interface DeviceIdentity {
  /** The identity the bundle is keyed by: the IMEI for nRF91 modems, the serial otherwise. */
  serial: string;
  model?: string;
  firmware?: string;
  protocolVersion?: number;
}

export type CredentialObject =
  | 'rootCa'
  | 'certificate'
  | 'privateKey'
  | 'wrappedKey'
  | 'claimCertificate'
  | 'claimKey'
  | 'claimWrappedKey'
  | 'fleetSettings';

export interface Credentials {
  rootCaPem: string;
  certificatePem: string;
  /** Plain key delivery: the PKCS#8 PEM, unwrapped in memory by the station. */
  privateKeyPem?: string;
  /** Wrapped key delivery: the RFC 5649 blob exactly as in the bundle (base64 or bytes). */
  wrappedKey?: string | Uint8Array;
}

export interface WriteProgress {
  object: CredentialObject;
  bytesSent: number;
  bytesTotal: number;
}

export interface CallOptions {
  signal?: AbortSignal;
}

export interface WriteCredentialsRequest extends Credentials, CallOptions {
  onProgress?: (p: WriteProgress) => void;
}

export interface VerifiedObject {
  object: CredentialObject;
  /** SHA-256 of exactly the bytes the driver writes (upper-case hex). */
  expected: string;
  /** What the device reports, or null if it has no such object. */
  actual: string | null;
  match: boolean;
}

export interface VerifyResult {
  /** True only if the device reported every expected hash. */
  ok: boolean;
  objects: VerifiedObject[];
}

export interface WriteResult {
  verify: VerifyResult;
  /** Bytes the driver put on the wire for this call, retries included. */
  bytesWritten: number;
  /** Write passes needed (1 = first time right). */
  passes: number;
}

export interface DeviceDriver {
  readonly name: DriverName;
  readIdentity(options?: CallOptions): Promise<DeviceIdentity>;
  verify(request: Credentials & CallOptions): Promise<VerifyResult>;
  /** Resolves only when the device's read-back matches; otherwise throws. */
  writeCredentials(request: WriteCredentialsRequest): Promise<WriteResult>;
  /** Detaches from the transport (the caller owns and closes it). */
  close(): Promise<void>;
}

export interface GenerateKeyRequest extends CallOptions {
  /** Subject for the CSR, e.g. `CN=352656100000001`. */
  subject: string;
}

export interface GeneratedKey {
  csrDer: Buffer;
  csrPem: string;
  /** Vendor attestation that came with the CSR (nRF91: COSE_Sign1), if any. */
  attestation?: Buffer;
}

export interface KeyGenerator {
  generateKey(request: GenerateKeyRequest): Promise<GeneratedKey>;
}

export interface ProvePossessionRequest extends CallOptions {
  nonce: Uint8Array;
  /** When given, the device's key must be the one this certificate certifies. */
  certificatePem?: string;
}

export interface PossessionProof {
  publicKeyDer: Buffer;
  signature: Buffer;
}

export interface PossessionProver {
  provePossession(request: ProvePossessionRequest): Promise<PossessionProof>;
}

export interface FirstConnectRequest extends CallOptions {
  /** The MQTT endpoint's host name (the server certificate must name it). */
  host: string;
  port: number;
  /** The MQTT client id: the thing name, so the device connects as its thing. */
  clientId: string;
}

/** How one connection attempt of the device ended, as the device reported it. */
export type ConnectOutcome =
  /** A CONNACK arrived; `code` is its return code (0 = accepted). */
  | 'connack'
  /** The server closed the link before any CONNACK (AWS's answer to a refused certificate, and JITR/JITP's first connect). */
  | 'closed'
  /** The TLS handshake failed (the server's certificate, or the device's own credentials). */
  | 'tls'
  /** No CONNACK in the device's time. */
  | 'timeout'
  /** The device could not reach the endpoint at all (name, route, refused). */
  | 'network';

export interface ConnectAttempt {
  outcome: ConnectOutcome;
  /** The CONNACK return code when `outcome` is `connack`. */
  code?: number;
  /** The device's words for a failed attempt. */
  reason?: string;
}

export interface FirstConnectResult {
  /** Every attempt in order; the last one got CONNACK 0. */
  attempts: ConnectAttempt[];
}

/**
 * The device's first MQTT connect to its endpoint as its thing, with the credentials it holds,
 * reported by the device itself. Resolves only on CONNACK 0; otherwise throws
 * DEVICE_CONNECT_FAILED with every attempt in `details.attempts`.
 */
export interface FirstConnector {
  firstConnect(request: FirstConnectRequest): Promise<FirstConnectResult>;
}

/** What a claim device receives at the station (strategy claim). */
export interface ClaimCredentials {
  rootCaPem: string;
  claimCertificatePem: string;
  /** Plain delivery: the claim key's PKCS#8 PEM, unwrapped in memory by the station. */
  claimPrivateKeyPem?: string;
  /** Wrapped delivery: the RFC 5649 blob of the claim key (base64 or bytes). */
  claimWrappedKey?: string | Uint8Array;
  /** The fleet settings: template name, the device's parameters and how it gets its key. */
  fleet: FleetSettings;
}

export interface FleetSettings {
  templateName: string;
  parameters: Record<string, string>;
  deviceKey: 'csr' | 'keys';
}

export interface ProvisionRequest extends CallOptions {
  host: string;
  port: number;
  /** The client id of both sessions (the claim's and the thing's): the thing name. */
  clientId: string;
}

export interface ProvisionResult {
  thingName: string;
  certificateId: string;
  attempts: ConnectAttempt[];
}

/**
 * Devices that provision themselves by claim: the station writes the claim and the fleet
 * settings (read back like credentials), then the device runs CreateCertificateFromCsr (or
 * CreateKeysAndCertificate) and RegisterThing over MQTT and connects as its new thing.
 * `provision` resolves only when the device connected as the thing; a refusal is
 * DEVICE_PROVISION_DENIED, another failure DEVICE_PROVISION_FAILED, both with the device's
 * report; a failed connect after provisioning is DEVICE_CONNECT_FAILED.
 */
export interface ClaimProvisioner {
  verifyClaim(request: ClaimCredentials & CallOptions): Promise<VerifyResult>;
  writeClaim(
    request: ClaimCredentials & CallOptions & { onProgress?: (p: WriteProgress) => void },
  ): Promise<WriteResult>;
  provision(request: ProvisionRequest): Promise<ProvisionResult>;
}

export function canProvisionByClaim<D extends DeviceDriver>(d: D): d is D & ClaimProvisioner {
  return typeof (d as Partial<ClaimProvisioner>).provision === 'function';
}

export function canGenerateKey<D extends DeviceDriver>(d: D): d is D & KeyGenerator {
  return typeof (d as Partial<KeyGenerator>).generateKey === 'function';
}

export function canProvePossession<D extends DeviceDriver>(d: D): d is D & PossessionProver {
  return typeof (d as Partial<PossessionProver>).provePossession === 'function';
}

export function canConnect<D extends DeviceDriver>(d: D): d is D & FirstConnector {
  return typeof (d as Partial<FirstConnector>).firstConnect === 'function';
}

/** In words, for operators: "CONNACK 5", "closed without CONNACK (…)", … */
export function describeAttempt(a: ConnectAttempt): string {
  switch (a.outcome) {
    case 'connack':
      return `CONNACK ${a.code ?? '?'}${a.code ? ` (${CONNACK_CODES[a.code] ?? 'refused'})` : ''}`;
    case 'closed':
      return `closed without CONNACK${a.reason ? ` (${a.reason})` : ''}`;
    case 'tls':
      return `TLS handshake failed${a.reason ? ` (${a.reason})` : ''}`;
    case 'timeout':
      return `no CONNACK in time${a.reason ? ` (${a.reason})` : ''}`;
    case 'network':
      return `endpoint unreachable${a.reason ? ` (${a.reason})` : ''}`;
  }
}

/** MQTT 3.1.1 CONNACK return codes (§3.2.2.3) and the MQTT 5 reason codes a device may report. */
const CONNACK_CODES: Record<number, string> = {
  1: 'unacceptable protocol version',
  2: 'identifier rejected',
  3: 'server unavailable',
  4: 'bad user name or password',
  5: 'not authorized',
  0x85: 'client identifier not valid',
  0x87: 'not authorized',
};

/** The failure of a first connect, with every attempt the device reported. */
export function connectFailed(
  req: Pick<FirstConnectRequest, 'host' | 'port' | 'clientId'>,
  attempts: ConnectAttempt[],
): ProvlineError {
  const last = attempts.at(-1);
  return new ProvlineError(
    'DEVICE_CONNECT_FAILED',
    `the device could not connect to ${req.host}:${req.port} as ${req.clientId}: ${
      last ? describeAttempt(last) : 'no attempt reported'
    }${attempts.length > 1 ? ` (${attempts.length} attempts)` : ''}`,
    {
      retryable: true,
      hint: 'AWS IoT hangs up without saying why: check that the certificate is ACTIVE and that a policy attached to it allows iot:Connect for the thing name; on the local stack `provline emulator events --client-id <thing>` says why',
      details: { host: req.host, port: req.port, clientId: req.clientId, attempts },
    },
  );
}

export interface RetryPolicy {
  attempts: number;
  /** Extra check beyond `retryable` (e.g. never retry DEVICE_DISCONNECTED). */
  retryIf?: (e: ProvlineError) => boolean;
  onRetry?: (e: ProvlineError, attempt: number) => Promise<void> | void;
}

/**
 * Errors a driver's per-command layer has already retried to its limit; an outer retry loop
 * (per object, per keygen) must not multiply those attempts.
 */
const RETRIED_PER_COMMAND = new Set(['DEVICE_TIMEOUT', 'DEVICE_BAD_FRAME', 'DEVICE_BUSY']);
export const notRetriedPerCommand = (e: ProvlineError): boolean => !RETRIED_PER_COMMAND.has(e.code);

/** Runs `op` up to `attempts` times while it throws retryable ProvlineErrors. */
export async function withRetries<T>(op: (attempt: number) => Promise<T>, policy: RetryPolicy): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await op(attempt);
    } catch (e) {
      if (
        !isProvlineError(e) ||
        !e.retryable ||
        attempt >= policy.attempts ||
        (policy.retryIf && !policy.retryIf(e))
      )
        throw e;
      await policy.onRetry?.(e, attempt);
    }
  }
}

export function verifyResult(objects: VerifiedObject[]): VerifyResult {
  return { ok: objects.length > 0 && objects.every((o) => o.match), objects };
}

export function mismatchError(result: VerifyResult, passes: number): ProvlineError {
  const bad = result.objects.filter((o) => !o.match).map((o) => o.object);
  return new ProvlineError(
    'DEVICE_VERIFY_MISMATCH',
    `the device's read-back does not match what was written (${bad.join(', ')}) after ${passes} pass${passes === 1 ? '' : 'es'}`,
    {
      retryable: false,
      hint: 'the link may be damaging data; check the cable and the baud rate',
      details: { objects: result.objects, passes },
    },
  );
}

/** Parses a CSR and checks its self-signature; throws DEVICE_CSR_INVALID otherwise. */
export async function checkCsr(csrDer: Buffer, expectSubject?: string): Promise<string> {
  let csr: Pkcs10CertificateRequest;
  try {
    csr = new Pkcs10CertificateRequest(csrDer);
  } catch (e) {
    throw new ProvlineError('DEVICE_CSR_INVALID', 'the device returned a CSR that does not parse', {
      cause: e,
      retryable: true,
    });
  }
  const ok = await csr.verify();
  if (!ok)
    throw new ProvlineError('DEVICE_CSR_INVALID', "the CSR's signature does not verify", { retryable: true });
  if (expectSubject && !csr.subject.includes(expectSubject)) {
    throw new ProvlineError(
      'DEVICE_CSR_INVALID',
      `the CSR subject "${csr.subject}" lacks "${expectSubject}"`,
      { retryable: false },
    );
  }
  return csr.toString('pem');
}

/**
 * Checks a proof of possession: the signature verifies under the reported key, and, when a
 * certificate is given, the reported key is the certificate's.
 */
export function checkPossession(message: Buffer, proof: PossessionProof, certificatePem?: string): void {
  const fail = (why: string): never => {
    throw new ProvlineError('DEVICE_POP_FAILED', `proof of possession failed: ${why}`, { retryable: false });
  };
  let key;
  try {
    key = createPublicKey({ key: proof.publicKeyDer, format: 'der', type: 'spki' });
  } catch (e) {
    return fail(`the device's public key does not parse (${(e as Error).message})`);
  }
  if (!verifySignature('sha256', message, { key, dsaEncoding: 'der' }, proof.signature))
    fail('the signature does not verify');
  if (certificatePem) {
    const cert = new X509Certificate(certificatePem);
    const certSpki = Buffer.from(cert.publicKey.rawData);
    if (!certSpki.equals(proof.publicKeyDer)) fail("the device's key is not the certificate's key");
  }
}
