/**
 * Wire numbers, labels and default limits of protocol v1. docs/protocol.md is
 * the normative description; this file is the one place the code reads them.
 */

export const PROTOCOL_VERSION = 1;
export const SUBPROTOCOL = 'reflector.v1';
export const DEFAULT_TUNNEL_PATH = '/tunnel';

/** Handshake (text) messages are JSON and never larger than this, in bytes. */
export const MAX_HANDSHAKE_MESSAGE_BYTES = 8 * 1024;

/** Frame header: type u8, stream id u32 BE, payload length u32 BE. */
export const FRAME_HEADER_BYTES = 9;

export const FrameType = {
  WELCOME: 0x01,
  OPEN: 0x02,
  OPEN_OK: 0x03,
  OPEN_FAIL: 0x04,
  DATA: 0x05,
  WINDOW: 0x06,
  FIN: 0x07,
  RST: 0x08,
  PING: 0x09,
  PONG: 0x0a,
  GOAWAY: 0x0b,
  RESUME: 0x0c,
  RESUME_OK: 0x0d,
  RESUME_FAIL: 0x0e,
} as const;
export type FrameTypeName = keyof typeof FrameType;
export type FrameTypeCode = (typeof FrameType)[FrameTypeName];

/** Service names: what OPEN may carry. Anything else is refused before lookup. */
export const SERVICE_NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;
export const MAX_SERVICE_NAME_BYTES = 63;
export const MAX_OPEN_FAIL_REASON_BYTES = 256;
export const PING_PAYLOAD_BYTES = 8;
/** WINDOW offsets are u64 on the wire but must stay exact in a JS number. */
export const MAX_STREAM_OFFSET = Number.MAX_SAFE_INTEGER;
export const MAX_STREAM_ID = 0xffff_ffff;
/** RESUME: old session id, proof, entry count; then one entry per stream. */
export const SESSION_ID_BYTES = 16;
export const RESUME_PROOF_BYTES = 32;
/** Each resume entry: stream id u32, received offset u64, flags u8. */
export const RESUME_ENTRY_BYTES = 13;
export const ResumeFlag = {
  /** This side received the peer's FIN on the stream. */
  FIN_RECEIVED: 0x01,
  /** The stream is past OPEN_OK: the client received it, or the server sent it. */
  OPENED: 0x02,
} as const;

/** Record layer: ChaCha20-Poly1305 (RFC 8439). */
export const AEAD_KEY_BYTES = 32;
export const AEAD_NONCE_BYTES = 12;
export const AEAD_TAG_BYTES = 16;
/** Rekey after this many records in one key epoch even if the byte limit was not reached. */
export const REKEY_AFTER_RECORDS = 2 ** 32;
/** Hard protocol ceiling for a record's plaintext; the negotiated limit is at most this. */
export const PROTOCOL_MAX_RECORD_BYTES = 1024 * 1024;
export const MIN_RECORD_BYTES = 1024;
export const MIN_REKEY_BYTES = 16 * 1024;

/** HKDF-SHA256 info labels of the key schedule. */
export const Label = {
  C2S: 'reflector/1 c2s',
  S2C: 'reflector/1 s2c',
  RESUME: 'reflector/1 resume',
  SESSION_ID: 'reflector/1 session id',
  REKEY: 'reflector/1 rekey',
  /** HMAC-SHA256 input prefix of a RESUME proof, followed by a NUL, the new T and the old session id. */
  RESUME_PROOF: 'reflector/1 resume proof',
  /** Prefix of the bytes the server's host key signs in WELCOME, followed by a NUL and T. */
  WELCOME_SIGNATURE: 'reflector/1 welcome',
} as const;

/** The `typ` header of the client's auth JWT. */
export const AUTH_JWT_TYPE = 'reflector-auth+jwt';
/** Longest allowed auth JWT lifetime (exp - iat), seconds. */
export const AUTH_JWT_MAX_LIFETIME_S = 60;
/** Clock skew tolerated when checking iat/exp, seconds. */
export const AUTH_CLOCK_TOLERANCE_S = 30;

export const X25519_PUBLIC_KEY_BYTES = 32;
export const ED25519_SIGNATURE_BYTES = 64;
export const MLKEM768_ENCAPSULATION_KEY_BYTES = 1184;
export const MLKEM768_CIPHERTEXT_BYTES = 1088;
export const CHALLENGE_BYTES = 32;

/**
 * WebSocket close codes (4000-4999 are ours). The peer only ever learns the
 * code; the precise reason goes to the server's audit log.
 */
export const CloseCode = {
  NORMAL: 1000,
  /** Sent by ws itself when a message exceeds maxPayload. */
  MESSAGE_TOO_BIG: 1009,
  PROTOCOL_ERROR: 4000,
  AUTH_FAILED: 4001,
  HANDSHAKE_TIMEOUT: 4002,
  RECORD_INVALID: 4003,
  LIMIT_EXCEEDED: 4004,
  KEY_REVOKED: 4005,
  IDLE_TIMEOUT: 4006,
  GOING_AWAY: 4007,
  VERSION_UNSUPPORTED: 4008,
  SERVER_IDENTITY_REJECTED: 4009,
  INTERNAL_ERROR: 4010,
} as const;
export type CloseCodeName = keyof typeof CloseCode;
export type CloseCodeValue = (typeof CloseCode)[CloseCodeName];

/** OPEN_FAIL codes (u16). */
export const OpenFailCode = {
  SERVICE_NOT_ALLOWED: 1,
  BACKEND_REFUSED: 2,
  BACKEND_UNREACHABLE: 3,
  STREAM_LIMIT: 4,
  DRAINING: 5,
} as const;
export type OpenFailCodeValue = (typeof OpenFailCode)[keyof typeof OpenFailCode];

/** RST codes (u16). */
export const ResetCode = {
  /** The application socket on the sender's side ended abnormally. */
  CANCEL: 1,
  /** The backend TCP connection was reset or failed. */
  BACKEND_RESET: 2,
  /** The session is closing and the stream could not finish. */
  SESSION_CLOSED: 3,
  /** The client lost the right to use this service (reload removed it). */
  REVOKED: 4,
  /** The stream stayed idle, or drain time ran out. */
  TIMEOUT: 5,
} as const;
export type ResetCodeValue = (typeof ResetCode)[keyof typeof ResetCode];

/** RESUME_FAIL codes (u16). The streams of the old session are reset by the client. */
export const ResumeFailCode = {
  /** No suspended session with that id here: expired, never existed, or held by another replica. */
  UNKNOWN_SESSION: 1,
  /** The proof does not verify. */
  BAD_PROOF: 2,
  /** The session belongs to another client key. */
  WRONG_CLIENT: 3,
  /** The stream lists could not be reconciled (offsets outside what was sent). */
  MISMATCH: 4,
} as const;

/** GOAWAY codes (u16). */
export const GoAwayCode = {
  /** Server draining: open streams may finish, open no new ones here. */
  DRAINING: 1,
} as const;

export const Defaults = {
  /** ssh gives a channel 2 MiB: at 256 KiB a stream crossing 30 ms of network could not pass 9 MB/s. */
  windowBytes: 1024 * 1024,
  maxRecordBytes: 128 * 1024,
  /** With the 1 MiB window, what a session may hold unread (window × streams) stays at 256 MiB. */
  maxStreamsPerSession: 256,
  rekeyBytes: 1024 ** 3,
  handshakeTimeoutMs: 10_000,
  /** Below nginx's default 60 s proxy_read_timeout. */
  pingIntervalMs: 25_000,
  idleTimeoutMs: 75_000,
  maxUnauthenticatedPerAddress: 32,
  /** Across all addresses: an attacker with many addresses (an IPv6 /64) is bounded too. */
  maxUnauthenticated: 1024,
  maxSessionsPerClient: 16,
  backendConnectTimeoutMs: 10_000,
  drainTimeoutMs: 30_000,
  /** How long streams of a dropped connection wait for the client to resume; 0 disables resumption. */
  resumeWindowMs: 60_000,
} as const;
