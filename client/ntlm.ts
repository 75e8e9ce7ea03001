/**
 * NTLM messages for HTTP proxy authentication (MS-NLMP): the Type 1
 * (NEGOTIATE) a client opens with, the Type 2 (CHALLENGE) the proxy answers
 * with in `Proxy-Authenticate: NTLM <base64>`, and the Type 3 (AUTHENTICATE)
 * that proves the password. Pure functions over bytes; no sockets here
 * (proxy-connect.ts runs the exchange).
 *
 * Only NTLMv2 responses are produced. LM and NTLMv1 responses are crackable
 * offline from one captured exchange and are never sent, whatever the proxy
 * offers. The NT hash needs MD4, which OpenSSL 3 (Node 20's default provider)
 * refuses, so it comes from js-md4's pure-JavaScript path; HMAC-MD5 is in
 * node:crypto.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';

/**
 * js-md4 ships no types. Its default export calls OpenSSL's md4 on Node
 * (which throws on Node 20), so only `arrayBuffer`, the pure-JS path, is used.
 */
const md4 = createRequire(import.meta.url)('js-md4') as { arrayBuffer(message: Uint8Array): ArrayBuffer };

const SIGNATURE = Buffer.from('NTLMSSP\0', 'latin1');

/** NEGOTIATE flags (MS-NLMP 2.2.2.5) this client uses. */
export const NtlmFlag = {
  UNICODE: 0x0000_0001,
  OEM: 0x0000_0002,
  REQUEST_TARGET: 0x0000_0004,
  NTLM: 0x0000_0200,
  ALWAYS_SIGN: 0x0000_8000,
  EXTENDED_SESSIONSECURITY: 0x0008_0000,
  TARGET_INFO: 0x0080_0000,
  KEY_128: 0x2000_0000,
  KEY_56: 0x8000_0000,
} as const;

const CLIENT_FLAGS =
  NtlmFlag.UNICODE |
  NtlmFlag.OEM |
  NtlmFlag.REQUEST_TARGET |
  NtlmFlag.NTLM |
  NtlmFlag.ALWAYS_SIGN |
  NtlmFlag.EXTENDED_SESSIONSECURITY |
  NtlmFlag.KEY_128 |
  NtlmFlag.KEY_56;

/** AV_PAIR ids (MS-NLMP 2.2.2.1) that matter here. */
const AV_EOL = 0;
const AV_TIMESTAMP = 7;

export interface NtlmCredentials {
  /** The account name, without the domain (`alice`, or a UPN such as `alice@corp.example`). */
  user: string;
  /** The NetBIOS or DNS domain (`CORP`); empty for a UPN or a local account. */
  domain: string;
  password: string;
  /** Sent as the workstation name; empty by default (it is optional, and names this machine to the proxy). */
  workstation?: string;
}

export interface NtlmChallenge {
  flags: number;
  /** The 8-byte server challenge. */
  challenge: Buffer;
  targetName: string;
  /** The AV_PAIR list the proxy sent (copied into the NTLMv2 blob); empty if it sent none. */
  targetInfo: Buffer;
}

/** Raised for a Type 2 message that cannot be parsed; the caller names the proxy. */
export class NtlmMessageError extends Error {}

/** Type 1 (NEGOTIATE): flags only, no domain or workstation (both optional). */
export function createType1Message(): Buffer {
  const message = Buffer.alloc(32);
  SIGNATURE.copy(message, 0);
  message.writeUInt32LE(1, 8);
  message.writeUInt32LE(CLIENT_FLAGS >>> 0, 12);
  // Empty domain and workstation buffers pointing at the end of the message.
  writeSecurityBuffer(message, 16, 0, 32);
  writeSecurityBuffer(message, 24, 0, 32);
  return message;
}

/** The value of a `Proxy-Authenticate` header for a Type 1: `NTLM <base64>`. */
export function type1Header(): string {
  return `NTLM ${createType1Message().toString('base64')}`;
}

/** Parses the base64 token of a `Proxy-Authenticate: NTLM <token>` header (the token alone, or the whole value). */
export function parseType2Message(token: string): NtlmChallenge {
  const text = token.replace(/^NTLM\s+/i, '').trim();
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text)) throw new NtlmMessageError('the NTLM challenge is not base64');
  const message = Buffer.from(text, 'base64');
  if (message.length < 32 || !message.subarray(0, 8).equals(SIGNATURE)) {
    throw new NtlmMessageError('the NTLM challenge does not start with the NTLMSSP signature');
  }
  if (message.readUInt32LE(8) !== 2) throw new NtlmMessageError(`expected an NTLM Type 2 message, got type ${message.readUInt32LE(8)}`);
  const flags = message.readUInt32LE(20);
  const challenge = Buffer.from(message.subarray(24, 32));
  const unicode = (flags & NtlmFlag.UNICODE) !== 0;
  // The target name is informational; some servers (squid's ntlm_fake_auth) send a bogus offset. Ignore it then.
  let targetName = '';
  try {
    targetName = decodeString(readSecurityBuffer(message, 12, 'target name'), unicode);
  } catch (error) {
    if (!(error instanceof NtlmMessageError)) throw error;
  }
  // The target info goes into the NTLMv2 response, so it must be well formed — when the flag says it is there.
  const targetInfo =
    (flags & NtlmFlag.TARGET_INFO) !== 0 && message.length >= 48 ? readSecurityBuffer(message, 40, 'target info') : Buffer.alloc(0);
  validateAvPairs(targetInfo);
  return { flags, challenge, targetName, targetInfo: Buffer.from(targetInfo) };
}

export interface Type3Inputs {
  /** 8 random bytes; fixed only by tests (MS-NLMP 4.2.4 vectors). */
  clientChallenge?: Buffer;
  /** FILETIME (100 ns since 1601) used when the proxy sent no timestamp; fixed only by tests. */
  timestamp?: bigint;
}

/** Type 3 (AUTHENTICATE) with an NTLMv2 response to `challenge`. */
export function createType3Message(challenge: NtlmChallenge, credentials: NtlmCredentials, inputs: Type3Inputs = {}): Buffer {
  const unicode = (challenge.flags & NtlmFlag.UNICODE) !== 0;
  const clientChallenge = inputs.clientChallenge ?? randomBytes(8);
  const serverTimestamp = findAvPair(challenge.targetInfo, AV_TIMESTAMP);
  const timestamp = serverTimestamp ?? filetime(inputs.timestamp);
  const responseKey = ntowfv2(credentials.password, credentials.user, credentials.domain);

  const blob = Buffer.concat([
    Buffer.from([0x01, 0x01, 0, 0, 0, 0, 0, 0]), // RespType, HiRespType, reserved
    timestamp,
    clientChallenge,
    Buffer.alloc(4),
    challenge.targetInfo,
    Buffer.alloc(4),
  ]);
  const ntProof = hmacMd5(responseKey, Buffer.concat([challenge.challenge, blob]));
  const ntResponse = Buffer.concat([ntProof, blob]);
  // With a server timestamp, MS-NLMP 3.1.5.1.2 says the LMv2 response is all zeros.
  const lmResponse =
    serverTimestamp !== undefined
      ? Buffer.alloc(24)
      : Buffer.concat([hmacMd5(responseKey, Buffer.concat([challenge.challenge, clientChallenge])), clientChallenge]);

  const domain = encodeString(credentials.domain, unicode);
  const user = encodeString(credentials.user, unicode);
  const workstation = encodeString(credentials.workstation ?? '', unicode);
  const flags =
    (NtlmFlag.NTLM |
      NtlmFlag.ALWAYS_SIGN |
      NtlmFlag.REQUEST_TARGET |
      NtlmFlag.EXTENDED_SESSIONSECURITY |
      NtlmFlag.KEY_128 |
      NtlmFlag.KEY_56 |
      (challenge.flags & NtlmFlag.TARGET_INFO) |
      (unicode ? NtlmFlag.UNICODE : NtlmFlag.OEM)) >>>
    0;

  const header = Buffer.alloc(64);
  SIGNATURE.copy(header, 0);
  header.writeUInt32LE(3, 8);
  let offset = header.length;
  const payload: Buffer[] = [];
  const place = (at: number, data: Buffer): void => {
    writeSecurityBuffer(header, at, data.length, offset);
    payload.push(data);
    offset += data.length;
  };
  place(12, lmResponse);
  place(20, ntResponse);
  place(28, domain);
  place(36, user);
  place(44, workstation);
  place(52, Buffer.alloc(0)); // no session key: the tunnel is protected by TLS and Reflector's own layer
  header.writeUInt32LE(flags, 60);
  return Buffer.concat([header, ...payload]);
}

/** The value of a `Proxy-Authorization` header for a Type 3: `NTLM <base64>`. */
export function type3Header(challenge: NtlmChallenge, credentials: NtlmCredentials): string {
  return `NTLM ${createType3Message(challenge, credentials).toString('base64')}`;
}

/** NT hash: MD4 over the UTF-16LE password (MS-NLMP 3.3.1, NTOWFv1). */
export function ntHash(password: string): Buffer {
  return Buffer.from(md4.arrayBuffer(Buffer.from(password, 'utf16le')));
}

/** NTOWFv2 (MS-NLMP 3.3.2): HMAC-MD5 keyed with the NT hash over UPPER(user) ‖ domain, UTF-16LE. */
export function ntowfv2(password: string, user: string, domain: string): Buffer {
  return hmacMd5(ntHash(password), Buffer.from(user.toUpperCase() + domain, 'utf16le'));
}

function hmacMd5(key: Buffer, data: Buffer): Buffer {
  return createHmac('md5', key).update(data).digest();
}

function filetime(value?: bigint): Buffer {
  const out = Buffer.alloc(8);
  out.writeBigUInt64LE(value ?? (BigInt(Date.now()) + 11_644_473_600_000n) * 10_000n);
  return out;
}

function writeSecurityBuffer(message: Buffer, at: number, length: number, offset: number): void {
  message.writeUInt16LE(length, at);
  message.writeUInt16LE(length, at + 2);
  message.writeUInt32LE(offset, at + 4);
}

function readSecurityBuffer(message: Buffer, at: number, what: string): Buffer {
  const length = message.readUInt16LE(at);
  const offset = message.readUInt32LE(at + 4);
  if (length === 0) return Buffer.alloc(0);
  if (offset + length > message.length) throw new NtlmMessageError(`the NTLM challenge's ${what} points outside the message`);
  return message.subarray(offset, offset + length);
}

function validateAvPairs(info: Buffer): void {
  let at = 0;
  while (at + 4 <= info.length) {
    const id = info.readUInt16LE(at);
    const length = info.readUInt16LE(at + 2);
    if (at + 4 + length > info.length) throw new NtlmMessageError('the NTLM challenge has a truncated target info entry');
    if (id === AV_EOL) return;
    at += 4 + length;
  }
  if (info.length > 0) throw new NtlmMessageError('the NTLM challenge target info does not end with MsvAvEOL');
}

function findAvPair(info: Buffer, wanted: number): Buffer | undefined {
  let at = 0;
  while (at + 4 <= info.length) {
    const id = info.readUInt16LE(at);
    const length = info.readUInt16LE(at + 2);
    if (id === AV_EOL) return undefined;
    if (id === wanted) return Buffer.from(info.subarray(at + 4, at + 4 + length));
    at += 4 + length;
  }
  return undefined;
}

function encodeString(text: string, unicode: boolean): Buffer {
  return Buffer.from(text, unicode ? 'utf16le' : 'latin1');
}

function decodeString(data: Buffer, unicode: boolean): string {
  return data.toString(unicode ? 'utf16le' : 'latin1');
}
