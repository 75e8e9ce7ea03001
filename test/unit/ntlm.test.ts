import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  createType1Message,
  createType3Message,
  NtlmFlag,
  NtlmMessageError,
  ntHash,
  ntowfv2,
  parseType2Message,
  type NtlmChallenge,
} from '../../client/ntlm.js';

const hex = (text: string) => Buffer.from(text.replace(/\s+/g, ''), 'hex');

/** MS-NLMP 4.2.4: the NTLMv2 example (user "User", domain "Domain", password "Password"). */
const SPEC_TARGET_INFO = Buffer.concat([
  Buffer.from([0x02, 0x00, 0x0c, 0x00]),
  Buffer.from('Domain', 'utf16le'),
  Buffer.from([0x01, 0x00, 0x0c, 0x00]),
  Buffer.from('Server', 'utf16le'),
  Buffer.from([0x00, 0x00, 0x00, 0x00]),
]);
const SPEC_CHALLENGE: NtlmChallenge = {
  flags: 0xe28a8233,
  challenge: hex('0123456789abcdef'),
  targetName: 'Server',
  targetInfo: SPEC_TARGET_INFO,
};
const SPEC_CREDENTIALS = { user: 'User', domain: 'Domain', password: 'Password', workstation: 'COMPUTER' };

/** A Type 2 message as a proxy sends it. */
function type2(options: { flags?: number; targetName?: string; targetInfo?: Buffer; challenge?: Buffer } = {}): Buffer {
  const flags = options.flags ?? (NtlmFlag.UNICODE | NtlmFlag.NTLM | NtlmFlag.TARGET_INFO | NtlmFlag.EXTENDED_SESSIONSECURITY);
  const name = Buffer.from(options.targetName ?? 'CORP', 'utf16le');
  const info = options.targetInfo ?? SPEC_TARGET_INFO;
  const header = Buffer.alloc(48);
  Buffer.from('NTLMSSP\0', 'latin1').copy(header, 0);
  header.writeUInt32LE(2, 8);
  header.writeUInt16LE(name.length, 12);
  header.writeUInt16LE(name.length, 14);
  header.writeUInt32LE(48, 16);
  header.writeUInt32LE(flags >>> 0, 20);
  (options.challenge ?? hex('0123456789abcdef')).copy(header, 24);
  header.writeUInt16LE(info.length, 40);
  header.writeUInt16LE(info.length, 42);
  header.writeUInt32LE(48 + name.length, 44);
  return Buffer.concat([header, name, info]);
}

/** Reads a security buffer (length, offset) out of a message. */
function field(message: Buffer, at: number): Buffer {
  const length = message.readUInt16LE(at);
  const offset = message.readUInt32LE(at + 4);
  return message.subarray(offset, offset + length);
}

describe('NT hash and NTOWFv2', () => {
  it('is MD4 of the UTF-16LE password, computed in pure JS (OpenSSL 3 has no MD4)', () => {
    assert.equal(ntHash('').toString('hex'), '31d6cfe0d16ae931b73c59d7e0c089c0'); // MD4 of empty UTF-16 string
    assert.equal(ntHash('Password').toString('hex'), 'a4f49c406510bdcab6824ee7c30fd852'); // MS-NLMP 4.2.2.1.2
  });

  it('derives the MS-NLMP 4.2.4.1.1 NTOWFv2 key, upper-casing the user but not the domain', () => {
    assert.equal(ntowfv2('Password', 'User', 'Domain').toString('hex'), '0c868a403bfd7a93a3001ef22ef02e3f');
    assert.equal(ntowfv2('Password', 'user', 'Domain').toString('hex'), '0c868a403bfd7a93a3001ef22ef02e3f');
    assert.notEqual(ntowfv2('Password', 'User', 'DOMAIN').toString('hex'), '0c868a403bfd7a93a3001ef22ef02e3f');
  });
});

describe('createType1Message', () => {
  it('is 32 bytes: signature, type 1, flags asking for NTLM with extended session security and Unicode', () => {
    const message = createType1Message();
    assert.equal(message.length, 32);
    assert.equal(message.subarray(0, 8).toString('latin1'), 'NTLMSSP\0');
    assert.equal(message.readUInt32LE(8), 1);
    const flags = message.readUInt32LE(12);
    for (const flag of [NtlmFlag.UNICODE, NtlmFlag.NTLM, NtlmFlag.EXTENDED_SESSIONSECURITY, NtlmFlag.REQUEST_TARGET]) {
      assert.ok((flags & flag) !== 0, `flag 0x${flag.toString(16)} set`);
    }
  });
});

describe('parseType2Message', () => {
  it('reads the flags, the server challenge, the target name and the target info', () => {
    const parsed = parseType2Message(`NTLM ${type2().toString('base64')}`);
    assert.equal(parsed.challenge.toString('hex'), '0123456789abcdef');
    assert.equal(parsed.targetName, 'CORP');
    assert.deepEqual(parsed.targetInfo, SPEC_TARGET_INFO);
  });

  it('accepts the bare token as well as the header value', () => {
    assert.equal(parseType2Message(type2().toString('base64')).targetName, 'CORP');
  });

  it("ignores a target name that points outside the message (squid's ntlm_fake_auth sends one)", () => {
    const squid = 'TlRMTVNTUAACAAAACQAJAK6qqqoHggigDHj3SvXxj3sAAAAAAAA6AFdPUktHUk9VUA==';
    const parsed = parseType2Message(squid);
    assert.equal(parsed.targetName, '');
    assert.equal(parsed.targetInfo.length, 0, 'no TARGET_INFO flag: no target info');
    assert.equal(parsed.challenge.length, 8);
  });

  it('rejects a message without the NTLMSSP signature', () => {
    const bad = type2();
    bad.write('XXXXXXXX', 0, 'latin1');
    assert.throws(() => parseType2Message(bad.toString('base64')), (error: unknown) => error instanceof NtlmMessageError && /signature/.test(error.message));
  });

  it('rejects a message of another type', () => {
    const bad = type2();
    bad.writeUInt32LE(3, 8);
    assert.throws(() => parseType2Message(bad.toString('base64')), /expected an NTLM Type 2 message, got type 3/);
  });

  it('rejects target info that points outside the message', () => {
    const bad = type2();
    bad.writeUInt32LE(10_000, 44);
    assert.throws(() => parseType2Message(bad.toString('base64')), /target info points outside the message/);
  });

  it('rejects target info whose entries run past its end', () => {
    const truncated = Buffer.from([0x02, 0x00, 0x40, 0x00, 0x41, 0x00]);
    assert.throws(() => parseType2Message(type2({ targetInfo: truncated }).toString('base64')), /truncated target info entry/);
  });

  it('rejects text that is not base64, and a message too short to hold a challenge', () => {
    assert.throws(() => parseType2Message('NTLM not*base64'), /not base64/);
    assert.throws(() => parseType2Message(Buffer.from('NTLMSSP\0\x02\0\0\0', 'latin1').toString('base64')), /signature/);
  });
});

describe('createType3Message', () => {
  it('produces the MS-NLMP 4.2.4 LMv2 response and NTProofStr for the spec inputs', () => {
    const message = createType3Message(SPEC_CHALLENGE, SPEC_CREDENTIALS, { clientChallenge: Buffer.alloc(8, 0xaa), timestamp: 0n });
    assert.equal(message.subarray(0, 8).toString('latin1'), 'NTLMSSP\0');
    assert.equal(message.readUInt32LE(8), 3);
    assert.equal(field(message, 12).toString('hex'), '86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa');
    const nt = field(message, 20);
    assert.equal(nt.subarray(0, 16).toString('hex'), '68cd0ab851e51c96aabc927bebef6a1c');
    // The blob: version 1.1, reserved, timestamp, client challenge, reserved, target info, reserved.
    assert.equal(nt.subarray(16, 24).toString('hex'), '0101000000000000');
    assert.equal(nt.subarray(24, 32).toString('hex'), '0000000000000000');
    assert.equal(nt.subarray(32, 40).toString('hex'), 'aaaaaaaaaaaaaaaa');
    assert.deepEqual(nt.subarray(44, 44 + SPEC_TARGET_INFO.length), SPEC_TARGET_INFO);
  });

  it('carries domain, user and workstation in UTF-16LE when the challenge negotiated Unicode', () => {
    const message = createType3Message(SPEC_CHALLENGE, SPEC_CREDENTIALS);
    assert.equal(field(message, 28).toString('utf16le'), 'Domain');
    assert.equal(field(message, 36).toString('utf16le'), 'User');
    assert.equal(field(message, 44).toString('utf16le'), 'COMPUTER');
    assert.ok((message.readUInt32LE(60) & NtlmFlag.UNICODE) !== 0);
  });

  it('falls back to 8-bit strings when the challenge did not negotiate Unicode', () => {
    const message = createType3Message({ ...SPEC_CHALLENGE, flags: NtlmFlag.OEM | NtlmFlag.NTLM }, SPEC_CREDENTIALS);
    assert.equal(field(message, 36).toString('latin1'), 'User');
    assert.ok((message.readUInt32LE(60) & NtlmFlag.OEM) !== 0);
  });

  it("uses the server's MsvAvTimestamp when present, and then sends an all-zero LMv2 response", () => {
    const stamp = hex('0090d336b734c301');
    const info = Buffer.concat([Buffer.from([0x07, 0x00, 0x08, 0x00]), stamp, Buffer.alloc(4)]);
    const message = createType3Message({ ...SPEC_CHALLENGE, targetInfo: info }, SPEC_CREDENTIALS);
    assert.deepEqual(field(message, 12), Buffer.alloc(24));
    assert.deepEqual(field(message, 20).subarray(24, 32), stamp);
  });

  it('never sends an LM or NTLMv1 response: the NT response is longer than the 24 bytes of v1', () => {
    const message = createType3Message(SPEC_CHALLENGE, SPEC_CREDENTIALS);
    assert.ok(field(message, 20).length > 24);
  });

  it('uses a fresh client challenge each time', () => {
    const a = field(createType3Message(SPEC_CHALLENGE, SPEC_CREDENTIALS), 20).subarray(32, 40);
    const b = field(createType3Message(SPEC_CHALLENGE, SPEC_CREDENTIALS), 20).subarray(32, 40);
    assert.notDeepEqual(a, b);
  });
});
