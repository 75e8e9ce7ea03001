/**
 * The error tree. The module that detects a problem throws one of these with a
 * stable `code`; one handler per side maps it to a WebSocket close code (peer)
 * or an exit code (CLI). Decide on `code` or `instanceof`, never on `message`.
 */
import { CloseCode, type CloseCodeValue } from './constants.js';

export const ErrorCode = {
  // Frames and streams (after the handshake)
  FRAME_MALFORMED: 'ERR_FRAME_MALFORMED',
  FRAME_UNKNOWN_TYPE: 'ERR_FRAME_UNKNOWN_TYPE',
  FRAME_NOT_ALLOWED: 'ERR_FRAME_NOT_ALLOWED',
  STREAM_UNKNOWN: 'ERR_STREAM_UNKNOWN',
  STREAM_ID_REUSED: 'ERR_STREAM_ID_REUSED',
  STREAM_STATE: 'ERR_STREAM_STATE',
  FLOW_CONTROL: 'ERR_FLOW_CONTROL',
  // Records
  RECORD_OPEN_FAILED: 'ERR_RECORD_OPEN_FAILED',
  RECORD_TOO_LARGE: 'ERR_RECORD_TOO_LARGE',
  RECORD_UNEXPECTED_TEXT: 'ERR_RECORD_UNEXPECTED_TEXT',
  // Handshake
  HANDSHAKE_MALFORMED: 'ERR_HANDSHAKE_MALFORMED',
  HANDSHAKE_VERSION: 'ERR_HANDSHAKE_VERSION',
  HANDSHAKE_TIMEOUT: 'ERR_HANDSHAKE_TIMEOUT',
  AUTH_UNKNOWN_KEY: 'ERR_AUTH_UNKNOWN_KEY',
  AUTH_BAD_TOKEN: 'ERR_AUTH_BAD_TOKEN',
  AUTH_BAD_CLAIMS: 'ERR_AUTH_BAD_CLAIMS',
  AUTH_REFUSED: 'ERR_AUTH_REFUSED',
  SERVER_KEY_MISMATCH: 'ERR_SERVER_KEY_MISMATCH',
  SERVER_KEY_UNKNOWN: 'ERR_SERVER_KEY_UNKNOWN',
  WELCOME_INVALID: 'ERR_WELCOME_INVALID',
  // Policy and limits
  LIMIT_STREAMS: 'ERR_LIMIT_STREAMS',
  LIMIT_SESSIONS: 'ERR_LIMIT_SESSIONS',
  LIMIT_UNAUTHENTICATED: 'ERR_LIMIT_UNAUTHENTICATED',
  KEY_REVOKED: 'ERR_KEY_REVOKED',
  IDLE_TIMEOUT: 'ERR_IDLE_TIMEOUT',
  GOING_AWAY: 'ERR_GOING_AWAY',
  // Streams as the application sees them
  OPEN_FAILED: 'ERR_OPEN_FAILED',
  STREAM_RESET: 'ERR_STREAM_RESET',
  SESSION_CLOSED: 'ERR_SESSION_CLOSED',
  // Local input (never reaches the wire)
  CONFIG_INVALID: 'ERR_CONFIG_INVALID',
  KEY_FILE_INVALID: 'ERR_KEY_FILE_INVALID',
  USAGE: 'ERR_USAGE',
  CONNECT_FAILED: 'ERR_CONNECT_FAILED',
  INTERNAL: 'ERR_INTERNAL',
} as const;
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

/** What the peer sees when a session ends because of this error. */
const closeCodeOf: Record<ErrorCodeValue, CloseCodeValue> = {
  ERR_FRAME_MALFORMED: CloseCode.PROTOCOL_ERROR,
  ERR_FRAME_UNKNOWN_TYPE: CloseCode.PROTOCOL_ERROR,
  ERR_FRAME_NOT_ALLOWED: CloseCode.PROTOCOL_ERROR,
  ERR_STREAM_UNKNOWN: CloseCode.PROTOCOL_ERROR,
  ERR_STREAM_ID_REUSED: CloseCode.PROTOCOL_ERROR,
  ERR_STREAM_STATE: CloseCode.PROTOCOL_ERROR,
  ERR_FLOW_CONTROL: CloseCode.PROTOCOL_ERROR,
  ERR_RECORD_OPEN_FAILED: CloseCode.RECORD_INVALID,
  ERR_RECORD_TOO_LARGE: CloseCode.RECORD_INVALID,
  ERR_RECORD_UNEXPECTED_TEXT: CloseCode.RECORD_INVALID,
  ERR_HANDSHAKE_MALFORMED: CloseCode.PROTOCOL_ERROR,
  ERR_HANDSHAKE_VERSION: CloseCode.VERSION_UNSUPPORTED,
  ERR_HANDSHAKE_TIMEOUT: CloseCode.HANDSHAKE_TIMEOUT,
  // Every authentication failure looks the same to the peer.
  ERR_AUTH_UNKNOWN_KEY: CloseCode.AUTH_FAILED,
  ERR_AUTH_BAD_TOKEN: CloseCode.AUTH_FAILED,
  ERR_AUTH_BAD_CLAIMS: CloseCode.AUTH_FAILED,
  ERR_AUTH_REFUSED: CloseCode.AUTH_FAILED,
  ERR_SERVER_KEY_MISMATCH: CloseCode.SERVER_IDENTITY_REJECTED,
  ERR_SERVER_KEY_UNKNOWN: CloseCode.SERVER_IDENTITY_REJECTED,
  ERR_WELCOME_INVALID: CloseCode.SERVER_IDENTITY_REJECTED,
  ERR_LIMIT_STREAMS: CloseCode.LIMIT_EXCEEDED,
  ERR_LIMIT_SESSIONS: CloseCode.LIMIT_EXCEEDED,
  ERR_LIMIT_UNAUTHENTICATED: CloseCode.LIMIT_EXCEEDED,
  ERR_KEY_REVOKED: CloseCode.KEY_REVOKED,
  ERR_IDLE_TIMEOUT: CloseCode.IDLE_TIMEOUT,
  ERR_GOING_AWAY: CloseCode.GOING_AWAY,
  ERR_OPEN_FAILED: CloseCode.INTERNAL_ERROR,
  ERR_STREAM_RESET: CloseCode.INTERNAL_ERROR,
  ERR_SESSION_CLOSED: CloseCode.INTERNAL_ERROR,
  ERR_CONFIG_INVALID: CloseCode.INTERNAL_ERROR,
  ERR_KEY_FILE_INVALID: CloseCode.INTERNAL_ERROR,
  ERR_USAGE: CloseCode.INTERNAL_ERROR,
  ERR_CONNECT_FAILED: CloseCode.INTERNAL_ERROR,
  ERR_INTERNAL: CloseCode.INTERNAL_ERROR,
};

export class ReflectorError extends Error {
  readonly code: ErrorCodeValue;
  constructor(code: ErrorCodeValue, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
  /** The WebSocket close code the peer receives if this error ends a session. */
  get closeCode(): CloseCodeValue {
    return closeCodeOf[this.code];
  }
}

/** A peer broke the wire protocol: bad frame, bad record, bad handshake message. */
export class ProtocolError extends ReflectorError {}
/** The client could not prove who it is (server side), or was refused (client side). */
export class AuthError extends ReflectorError {
  /** The client key thumbprint the token named (its `kid`), once the header was readable: for the audit log. */
  kid?: string;
}
/** The server could not prove who it is (client side). */
export class IdentityError extends ReflectorError {}
/** A rule or limit said no: too many streams, sessions, a revoked key. */
export class PolicyError extends ReflectorError {}
/** Local input: config, key files, flags. Printed as one sentence, exit 2. */
export class ConfigError extends ReflectorError {
  constructor(message: string, options?: { cause?: unknown; code?: ErrorCodeValue }) {
    super(options?.code ?? ErrorCode.CONFIG_INVALID, message, options);
  }
}
/** A stream-level failure seen by the application (OPEN_FAIL, RST, session gone). */
export class StreamError extends ReflectorError {
  readonly wireCode: number | undefined;
  constructor(code: ErrorCodeValue, message: string, wireCode?: number, options?: { cause?: unknown }) {
    super(code, message, options);
    this.wireCode = wireCode;
  }
}

export function isReflectorError(value: unknown): value is ReflectorError {
  return value instanceof ReflectorError;
}

/** Process exit codes of the `reflector` command (documented in README). */
export const ExitCode = {
  OK: 0,
  INTERNAL: 1,
  USAGE: 2,
  SERVER_IDENTITY: 3,
  AUTH_REFUSED: 4,
  CONNECT_FAILED: 5,
  STREAM_FAILED: 6,
} as const;

export function exitCodeFor(error: unknown): number {
  if (!(error instanceof ReflectorError)) return ExitCode.INTERNAL;
  if (error instanceof ConfigError) return ExitCode.USAGE;
  if (error instanceof IdentityError) return ExitCode.SERVER_IDENTITY;
  if (error instanceof AuthError) return ExitCode.AUTH_REFUSED;
  if (error instanceof StreamError) return ExitCode.STREAM_FAILED;
  switch (error.code) {
    case ErrorCode.USAGE:
    case ErrorCode.CONFIG_INVALID:
    case ErrorCode.KEY_FILE_INVALID:
      return ExitCode.USAGE;
    case ErrorCode.CONNECT_FAILED:
      return ExitCode.CONNECT_FAILED;
    default:
      return ExitCode.INTERNAL;
  }
}
