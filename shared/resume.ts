/**
 * The proof in RESUME: possession of the old session's resumption secret,
 * bound to the new connection's transcript (fresh challenge, fresh keys) so a
 * captured RESUME is worthless on any other connection.
 *
 *   proof = HMAC-SHA256(resumption_old, utf8(Label.RESUME_PROOF) ‖ 0x00 ‖ T_new ‖ session_id_old)
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { Label, RESUME_PROOF_BYTES } from './constants.js';

export function resumeProof(oldResumption: Buffer, oldSessionId: Buffer, newTranscript: Buffer): Buffer {
  return createHmac('sha256', oldResumption)
    .update(Label.RESUME_PROOF)
    .update(Buffer.of(0))
    .update(newTranscript)
    .update(oldSessionId)
    .digest();
}

export function verifyResumeProof(proof: Buffer, oldResumption: Buffer, oldSessionId: Buffer, newTranscript: Buffer): boolean {
  if (proof.length !== RESUME_PROOF_BYTES) return false;
  return timingSafeEqual(proof, resumeProof(oldResumption, oldSessionId, newTranscript));
}
