/**
 * Flash-stage errors: the one table from device error codes (nRF91 `+CME ERROR: <n>`,
 * provline-serial-v1 status bytes) to provline's stable codes, plus constructors for the
 * transport-level failures every driver shares. Drivers branch on `code` and `retryable`,
 * never on message text.
 */
import { ProvlineError, type ErrorCode, type ErrorOptions } from '../../core/index.js';
import { V1_STATUS } from '../protocol/frame.js';

export interface DeviceErrorSpec {
  code: ErrorCode;
  retryable: boolean;
  message: string;
  hint?: string;
}

/**
 * nRF91 `+CME ERROR` codes (shared/reference/device-protocols.md A.1). `retryable` means the
 * same command may succeed if sent again (after the driver's own remedy: 518 → AT+CFUN=4 first,
 * 519 → delete first); everything else needs an operator or a different request.
 */
export const CME_ERRORS: Readonly<Record<number, DeviceErrorSpec>> = {
  513: {
    code: 'DEVICE_CREDENTIAL_NOT_FOUND',
    retryable: false,
    message: 'the credential does not exist on the device',
  },
  514: {
    code: 'DEVICE_ACCESS_DENIED',
    retryable: false,
    message: 'the device refused access to this sec_tag or type',
    hint: 'use a sec_tag below 2147483648 that is not reserved',
  },
  515: {
    code: 'DEVICE_MEMORY_FULL',
    retryable: false,
    message: 'the device credential store is full',
    hint: 'delete unused credentials on the device',
  },
  518: {
    code: 'DEVICE_NOT_OFFLINE',
    retryable: true,
    message: 'the modem is active; credential work needs AT+CFUN=4 first',
  },
  519: {
    code: 'DEVICE_CREDENTIAL_EXISTS',
    retryable: true,
    message: 'a credential of this type already exists in the sec_tag',
  },
  523: { code: 'DEVICE_KEYGEN_FAILED', retryable: true, message: 'on-device key generation failed' },
  527: {
    code: 'DEVICE_CERT_INVALID',
    retryable: true,
    message: 'the device rejected the certificate content',
    hint: 'seen transiently on some modem firmware; if it persists, check the PEM',
  },
  528: {
    code: 'DEVICE_POWER_OFF_WARNING',
    retryable: false,
    message: 'the modem reports a power-off warning',
    hint: 'check the device supply voltage',
  },
};

export function cmeError(n: number, command: string): ProvlineError {
  const spec = CME_ERRORS[n] ?? {
    code: 'DEVICE_CME_ERROR',
    retryable: false,
    message: `the modem answered +CME ERROR: ${n}`,
  };
  return deviceError(spec, { details: { cme: n, command } });
}

export const V1_ERRORS: Readonly<Record<number, DeviceErrorSpec>> = {
  [V1_STATUS.UNKNOWN_COMMAND]: {
    code: 'DEVICE_UNSUPPORTED_COMMAND',
    retryable: false,
    message: 'the device does not know this command',
  },
  [V1_STATUS.BAD_PAYLOAD]: {
    code: 'DEVICE_PROTOCOL_ERROR',
    retryable: false,
    message: 'the device could not parse the request payload',
  },
  [V1_STATUS.BAD_OFFSET]: {
    code: 'DEVICE_BAD_OFFSET',
    retryable: true,
    message: 'the device expected a different chunk offset',
  },
  [V1_STATUS.HASH_MISMATCH]: {
    code: 'DEVICE_HASH_MISMATCH',
    retryable: true,
    message: 'the object the device received does not match its declared SHA-256',
  },
  [V1_STATUS.NOT_FOUND]: {
    code: 'DEVICE_CREDENTIAL_NOT_FOUND',
    retryable: false,
    message: 'the object does not exist on the device',
  },
  [V1_STATUS.NO_SPACE]: {
    code: 'DEVICE_MEMORY_FULL',
    retryable: false,
    message: 'the object is larger than the device can store',
  },
  [V1_STATUS.UNWRAP_FAILED]: {
    code: 'DEVICE_UNWRAP_FAILED',
    retryable: false,
    message: 'the device could not unwrap the key with its KEK',
    hint: 'the bundle was wrapped under a different KEK than the one provisioned in this device',
  },
  [V1_STATUS.KEY_INVALID]: {
    code: 'DEVICE_KEY_INVALID',
    retryable: false,
    message: 'the device could not use the private key',
  },
  [V1_STATUS.BUSY]: { code: 'DEVICE_BUSY', retryable: true, message: 'the device is busy' },
  [V1_STATUS.NO_KEY]: {
    code: 'DEVICE_NO_KEY',
    retryable: false,
    message: 'the device has no private key to sign with',
  },
  [V1_STATUS.VERSION_UNSUPPORTED]: {
    code: 'DEVICE_VERSION_UNSUPPORTED',
    retryable: false,
    message: 'the device speaks no protocol version this station supports',
  },
  [V1_STATUS.CONTENT_REJECTED]: {
    code: 'DEVICE_CERT_INVALID',
    retryable: true,
    message: 'the device rejected the object content',
  },
  [V1_STATUS.BAD_FRAME]: {
    code: 'DEVICE_BAD_FRAME',
    retryable: true,
    message: 'the device received a damaged frame',
  },
  [V1_STATUS.CONNECT_FAILED]: {
    code: 'DEVICE_CONNECT_FAILED',
    retryable: true,
    message: 'the device could not connect to its MQTT endpoint',
  },
  [V1_STATUS.PROVISION_DENIED]: {
    code: 'DEVICE_PROVISION_DENIED',
    retryable: false,
    message: 'AWS IoT refused to provision the device with its claim',
  },
  [V1_STATUS.PROVISION_FAILED]: {
    code: 'DEVICE_PROVISION_FAILED',
    retryable: false,
    message: "the device's fleet provisioning failed",
  },
};

export function v1StatusError(status: number, command: string): ProvlineError {
  const spec = V1_ERRORS[status] ?? {
    code: 'DEVICE_STATUS_ERROR',
    retryable: false,
    message: `the device answered status ${status}`,
  };
  return deviceError(spec, { details: { status, command } });
}

function deviceError(spec: DeviceErrorSpec, options: ErrorOptions): ProvlineError {
  return new ProvlineError(spec.code, spec.message, {
    ...options,
    retryable: spec.retryable,
    hint: spec.hint,
  });
}

export const timeoutError = (what: string, ms: number): ProvlineError =>
  new ProvlineError('DEVICE_TIMEOUT', `no answer from the device to ${what} within ${ms} ms`, {
    retryable: true,
    details: { command: what, timeoutMs: ms },
  });

export const disconnectedError = (what: string, cause?: unknown): ProvlineError =>
  new ProvlineError('DEVICE_DISCONNECTED', `the device link closed during ${what}`, {
    retryable: false,
    cause,
    hint: 'the device was unplugged or the bridge went away; reconnect it and start again',
    details: { command: what },
  });

export const abortedError = (what: string): ProvlineError =>
  new ProvlineError('ABORTED', `${what} was abandoned`, { retryable: false, details: { command: what } });

export const protocolError = (
  message: string,
  details: Record<string, unknown> = {},
  retryable = true,
): ProvlineError => new ProvlineError('DEVICE_PROTOCOL_ERROR', message, { retryable, details });
