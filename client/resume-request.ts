/**
 * The client half of a RESUME exchange on a freshly authenticated connection:
 * prove the suspended session, and on RESUME_OK hand the connection to it and
 * reconcile its streams — synchronously, while the RESUME_OK record is being
 * handled, because DATA carries no offset: the rewind must come before any
 * later record's bytes.
 */
import type { FrameOf } from '../shared/frames.js';
import { resumeProof } from '../shared/resume.js';
import type { SecureSession } from '../shared/secure-session.js';

export type ResumeOutcome = { resumed: true } | { resumed: false; reason: string } | { lost: true };

export function requestResume(suspended: SecureSession, fresh: SecureSession, timeoutMs: number): Promise<ResumeOutcome> {
  return new Promise<ResumeOutcome>((resolve) => {
    const done = (outcome: ResumeOutcome): void => {
      clearTimeout(timer);
      fresh.removeAllListeners('resume-ok');
      fresh.removeAllListeners('resume-fail');
      fresh.off('close', onClose);
      resolve(outcome);
    };
    const onClose = (): void => done({ lost: true });
    const timer = setTimeout(() => {
      fresh.close(1000);
      done({ lost: true });
    }, timeoutMs);
    fresh.once('resume-ok', (frame: FrameOf<'RESUME_OK'>) => {
      suspended.attach(fresh.detachTransport());
      try {
        suspended.mux.reconcile(frame.streams);
      } catch (error) {
        suspended.fail(error);
      }
      done({ resumed: true });
    });
    fresh.once('resume-fail', (frame: FrameOf<'RESUME_FAIL'>) => done({ resumed: false, reason: frame.reason || `code ${frame.code}` }));
    fresh.once('close', onClose);
    fresh.sendFrame({
      type: 'RESUME',
      streamId: 0,
      sessionId: suspended.sessionId,
      proof: resumeProof(suspended.resumptionSecret, suspended.sessionId, fresh.transcript),
      streams: suspended.mux.resumeEntries(),
    });
    // RESUME travels alone, as the first record of the connection.
    fresh.mux.flush();
  });
}
