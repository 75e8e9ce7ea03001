import { NtlmFlag } from '../../client/ntlm.js';

/** A minimal NTLM type-2 (CHALLENGE) message, base64, as a proxy puts it in Proxy-Authenticate. */
export function ntlmChallenge(): string {
  const message = Buffer.alloc(48);
  Buffer.from('NTLMSSP\0', 'latin1').copy(message);
  message.writeUInt32LE(2, 8);
  message.writeUInt32LE(48, 16);
  message.writeUInt32LE(NtlmFlag.UNICODE | NtlmFlag.NTLM, 20);
  Buffer.from('0123456789abcdef', 'hex').copy(message, 24);
  return message.toString('base64');
}
