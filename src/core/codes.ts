/**
 * The registry of error codes: every stable code provline raises, records in the journal or
 * reports for a CSV row, grouped by the section of docs/troubleshooting.md that explains it.
 *
 * A code is part of the interface (operators grep logs for it, scripts branch on it), so it is
 * added here first, then documented; test/unit/docs.test.ts fails for a code used in src/ that
 * is missing here, and for a code here that the page does not explain in its section. Codes are
 * never built from run-time values: a function below picks among registered ones instead.
 */

export const ERROR_CODES = {
  /** CSV intake problems (`provline validate`), one per row and column. */
  intake: [
    'FILE_EMPTY',
    'NO_DATA_ROWS',
    'HEADER_MISSING_SERIAL',
    'HEADER_DUPLICATE_COLUMN',
    'HEADER_EMPTY_COLUMN',
    'HEADER_MISSING_COLUMN',
    'PROFILE_TOO_MANY_ATTRIBUTES',
    'FIELD_COUNT',
    'SERIAL_EMPTY',
    'SERIAL_INVALID',
    'SERIAL_DUPLICATE',
    'THING_NAME_INVALID',
    'THING_NAME_DUPLICATE',
    'ATTRIBUTE_VALUE_INVALID',
    'PARAMETER_TOO_LONG',
    'INVALID_UTF8',
    'FILE_ENCODING',
    'UNTERMINATED_QUOTE',
    'CSV_SYNTAX',
  ],
  input: [
    'USAGE',
    'INPUT_UNREADABLE',
    'CONFIG_INVALID',
    'CONFIG_NOT_FOUND',
    'PROFILE_NOT_FOUND',
    'SERIAL_ALREADY_SUBMITTED',
    'PATTERN_INVALID',
    'SERIAL_NOT_FOUND',
    'CERTIFICATE_NOT_FOUND',
    'PROFILE_ACCOUNTS_DIFFER',
  ],
  stack: [
    'STACK_REDIS_MISSING',
    'STACK_REDIS_FAILED',
    'STACK_SOFTHSM_MISSING',
    'STACK_SOFTHSM_FAILED',
    'STACK_LOCKED',
    'STACK_AWS_FAILED',
    'REDIS_NOT_CONFIGURED',
    'DEMO_FAILED',
    'REHEARSAL_FAILED',
  ],
  /** The flash stage: device answers, drivers and serial transports. */
  device: [
    'DEVICE_PROVISION_DENIED',
    'DEVICE_PROVISION_FAILED',
    'DEVICE_TIMEOUT',
    'DEVICE_DISCONNECTED',
    'ABORTED',
    'DEVICE_PROTOCOL_ERROR',
    'DEVICE_BAD_FRAME',
    'DEVICE_BAD_OFFSET',
    'DEVICE_HASH_MISMATCH',
    'DEVICE_VERIFY_MISMATCH',
    'DEVICE_CERT_INVALID',
    'DEVICE_CREDENTIAL_NOT_FOUND',
    'DEVICE_CREDENTIAL_EXISTS',
    'DEVICE_ACCESS_DENIED',
    'DEVICE_MEMORY_FULL',
    'DEVICE_NOT_OFFLINE',
    'DEVICE_KEYGEN_FAILED',
    'DEVICE_POWER_OFF_WARNING',
    'DEVICE_CME_ERROR',
    'DEVICE_COMMAND_ERROR',
    'DEVICE_UNSUPPORTED_COMMAND',
    'DEVICE_VERSION_UNSUPPORTED',
    'DEVICE_STATUS_ERROR',
    'DEVICE_UNWRAP_FAILED',
    'DEVICE_KEY_INVALID',
    'DEVICE_NO_KEY',
    'DEVICE_BUSY',
    'DEVICE_CSR_INVALID',
    'DEVICE_POP_FAILED',
    'DEVICE_CONNECT_FAILED',
    'DRIVER_BAD_SETTINGS',
    'DRIVER_UNSUPPORTED',
    'DRIVER_UNSUPPORTED_DELIVERY',
    'TRANSPORT_BAD_TARGET',
    'TRANSPORT_OPEN_FAILED',
  ],
  station: [
    'STATION_DEVICE_UNKNOWN',
    'STATION_WRONG_PROFILE',
    'STATION_NOT_REGISTERED',
    'STATION_BUNDLE_INCOMPLETE',
    'STATION_OFFLINE',
    'STATION_JOURNAL_UNREACHABLE',
    'STATION_CACHE_INVALID',
    'STATION_CACHE_NOT_FOUND',
    'STATION_RECORD_REJECTED',
    'STATION_REGISTRATION_INCOMPLETE',
    'STATION_NO_HSM',
    'STATION_INTERNAL',
  ],
  /** PKCS#11 failures, mapped from CKR_* in src/hsm/errors.ts. */
  hsm: [
    'HSM_PIN_MISSING',
    'HSM_PIN_FILE_UNREADABLE',
    'HSM_PIN_INCORRECT',
    'HSM_PIN_INVALID',
    'HSM_PIN_LOCKED',
    'HSM_PIN_EXPIRED',
    'HSM_TOKEN_NOT_READY',
    'HSM_NOT_LOGGED_IN',
    'HSM_LOGIN_CONFLICT',
    'HSM_MODULE_NOT_FOUND',
    'HSM_MODULE_LOAD_FAILED',
    'HSM_MODULE_CONFLICT',
    'HSM_MODULE_STATE',
    'HSM_TOKEN_NOT_FOUND',
    'HSM_TOKEN_AMBIGUOUS',
    'HSM_TOKEN_NOT_PRESENT',
    'HSM_TOKEN_READ_ONLY',
    'HSM_URI_INVALID',
    'HSM_LABEL_TOO_LONG',
    'HSM_DEVICE_ERROR',
    'HSM_HOST_MEMORY',
    'HSM_FUNCTION_FAILED',
    'HSM_GENERAL_ERROR',
    'HSM_SESSION_LOST',
    'HSM_SESSION_LIMIT',
    'HSM_OPERATION_ACTIVE',
    'HSM_MECHANISM_UNSUPPORTED',
    'HSM_KEY_TYPE_UNSUPPORTED',
    'HSM_OBJECT_GONE',
    'HSM_ATTRIBUTE_SENSITIVE',
    'HSM_KEY_NOT_EXPORTABLE',
    'HSM_KEY_USAGE_DENIED',
    'HSM_TEMPLATE_REJECTED',
    'HSM_KEK_NOT_FOUND',
    'HSM_KEK_EXISTS',
    'HSM_KEK_AMBIGUOUS',
    'HSM_KEK_INVALID',
    'HSM_KEK_FILE_INVALID',
    'HSM_WRAPPED_KEY_INVALID',
    'HSM_CLOSED',
    'HSM_INTERNAL',
    'HSM_CKR_UNEXPECTED',
    'HSM_FAILED',
    'HSM_BENCH_BUILD_FAILED',
    'HSM_BENCH_FAILED',
    'CA_NOT_CONFIGURED',
    'CA_EXISTS',
    'CA_AMBIGUOUS',
    'CA_KEY_NOT_FOUND',
    'CA_CERT_NOT_FOUND',
    'CA_KEY_MISMATCH',
    'CA_CERT_INVALID',
    'CA_WRONG_TOKEN',
    'CA_EXPIRED',
    'CA_NOT_YET_VALID',
    'CA_SUBJECT_NOT_PERMITTED',
    'CA_NOT_REGISTERED',
    'CA_NOT_ACTIVE',
    'CA_AUTO_REGISTRATION_OFF',
    'CA_TEMPLATE_MISSING',
    'CA_TEMPLATE_UNEXPECTED',
    'JITP_SUBJECT_INVALID',
  ],
  emulator: ['EMULATOR_UNREACHABLE', 'EMULATOR_FAULTS_REJECTED'],
  /** AWS IoT and S3 calls (src/cloud). */
  registration: [
    'CERT_NOT_ISSUED',
    'CERT_NOT_REGISTERED',
    'SERIAL_NOT_FOUND',
    'AWS_NOT_CONFIGURED',
    'AWS_REQUEST_FAILED',
    'REGISTRATION_REJECTED',
    'REGISTRATION_TASK_REJECTED',
    'REGISTRATION_TASK_NOT_FOUND',
    'REGISTRATION_INPUT_INVALID',
    'REGISTRATION_MANIFEST_INVALID',
    'REGISTRATION_REPORT_UNREADABLE',
    'POLICY_NOT_FOUND',
    'POLICY_INVALID',
    'POLICY_MISMATCH',
    'THING_TYPE_DEPRECATED',
    'CA_REGISTRATION_CODE_REJECTED',
    'CA_REGISTRATION_REJECTED',
    'JITP_TEMPLATE_INVALID',
    'JITR_CONFIG_INVALID',
    'JITR_NEEDS_STAND_IN',
    'JITR_PACKAGE_INVALID',
    'JITR_EVENT_INVALID',
    'JITR_CERTIFICATE_UNKNOWN',
    'JITR_CERTIFICATE_MISMATCH',
    'JITR_CERTIFICATE_STATUS',
    'JITR_NOT_SIGNED_BY_FACTORY_CA',
    'JITR_CERTIFICATE_NOT_VALID_NOW',
    'JITR_SUBJECT_MISMATCH',
    'CLAIM_NOT_CONFIGURED',
    'CLAIM_NOT_FOUND',
    'CLAIM_INVALID',
    'CLAIM_REVOKED',
    'CLAIM_TEMPLATE_INVALID',
    'CLAIM_POLICY_INVALID',
    'CLAIM_LOT_CHANGED',
    'CLAIM_HOOK_UNREACHABLE',
    'CLAIM_HOOK_PACKAGE_INVALID',
  ],
  /** The batch pipeline: what a device's journal record or a batch's abort can hold. */
  pipeline: [
    'REDIS_UNREACHABLE',
    'BATCH_NOT_FOUND',
    'BATCH_EXISTS',
    'BATCH_ABORTED',
    'TEMPLATE_INVALID',
    'ROOT_CA_UNREADABLE',
    'HSM_ERROR',
    'REGISTRATION_RETRIES_EXHAUSTED',
    'REGISTRATION_LINE_MISSING',
    'REGISTRATION_KEY_MISMATCH',
    'REGISTRATION_THROTTLED',
    'DEVICE_NOT_KEYED',
    'DEVICE_NOT_IN_PLAN',
    'RECONCILE_BUSY',
  ],
} as const satisfies Record<string, readonly string[]>;

export type ErrorArea = keyof typeof ERROR_CODES;
export type ErrorCode = (typeof ERROR_CODES)[ErrorArea][number];

const AREA_OF = new Map<string, ErrorArea>(
  (Object.entries(ERROR_CODES) as Array<[ErrorArea, readonly string[]]>).flatMap(([area, codes]) =>
    codes.map((c) => [c, area] as const),
  ),
);

/** Every registered code, each once. */
export function allErrorCodes(): ErrorCode[] {
  return [...AREA_OF.keys()] as ErrorCode[];
}

export function isErrorCode(s: string): s is ErrorCode {
  return AREA_OF.has(s);
}

/** The troubleshooting section that explains `code`. */
export function errorArea(code: ErrorCode): ErrorArea {
  return AREA_OF.get(code)!;
}

/**
 * A code read back from storage (the journal, a batch's abort record) where it was written
 * from a registered code; anything else, e.g. a record written by another version, becomes
 * `fallback`.
 */
export function storedErrorCode(stored: string | undefined, fallback: ErrorCode): ErrorCode {
  return stored !== undefined && isErrorCode(stored) ? stored : fallback;
}
