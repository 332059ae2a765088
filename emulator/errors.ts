/**
 * AWS IoT's modelled exceptions and their HTTP statuses (aws-iot.md §5.1). Operations throw
 * IotError; the server renders it as `x-amzn-ErrorType: <name>` plus `{"message": ...}`.
 */

export const ERROR_STATUS = {
  InvalidRequestException: 400,
  ThrottlingException: 400,
  CertificateValidationException: 400,
  RegistrationCodeValidationException: 400,
  ResourceRegistrationFailureException: 400,
  MalformedPolicyException: 400,
  SqlParseException: 400,
  UnauthorizedException: 401,
  ResourceNotFoundException: 404,
  CertificateStateException: 406,
  ResourceAlreadyExistsException: 409,
  CertificateConflictException: 409,
  ConflictingResourceUpdateException: 409,
  DeleteConflictException: 409,
  VersionConflictException: 409,
  VersionsLimitExceededException: 409,
  LimitExceededException: 410,
  InternalFailureException: 500,
  ServiceUnavailableException: 503,
  // Authentication failures happen before routing; AWS answers them with 403.
  InvalidSignatureException: 403,
  UnrecognizedClientException: 403,
  MissingAuthenticationTokenException: 403,
} as const;

export type IotErrorName = keyof typeof ERROR_STATUS;

export class IotError extends Error {
  readonly status: number;
  readonly extra: Record<string, unknown>;

  constructor(
    readonly errorName: IotErrorName,
    message: string,
    extra: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = errorName;
    this.status = ERROR_STATUS[errorName];
    this.extra = extra;
  }
}

export const invalid = (message: string): IotError => new IotError('InvalidRequestException', message);
export const notFound = (message: string): IotError => new IotError('ResourceNotFoundException', message);

/** The Java-SDK-style rendering that bulk ERRORS reports carry (aws-iot.md §1.3, OBSERVED). */
export function javaStyleMessage(e: IotError, requestId: string): string {
  return `com.amazonaws.services.iot.model.${e.errorName}: ${e.message} (Service: AWSIot; Status Code: ${e.status}; Error Code: ${e.errorName}; Request ID: ${requestId}; Proxy: null)`;
}
