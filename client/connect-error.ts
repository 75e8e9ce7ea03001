/**
 * Failures to reach the gateway: the dialer, the proxy CONNECT and the session
 * attempt all throw these. Every message is one sentence that names the thing
 * (the URL, the proxy, the certificate) and, where one exists, the fix.
 */
import { ErrorCode, ReflectorError } from '../shared/errors.js';

/** Could not connect this time; the reconnect loop tries again. */
export class ConnectError extends ReflectorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.CONNECT_FAILED, message, options);
  }
}

/**
 * The proxy wants credentials we do not have, or refused the ones we sent.
 * Fatal: retrying cannot fix it, and repeating a wrong domain password every
 * few seconds is how accounts get locked out.
 */
export class ProxyAuthError extends ConnectError {}
