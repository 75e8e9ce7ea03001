/**
 * Attacks on the client's auth JWT, against the real server over a real
 * socket. Each attacker gets `hello` like anyone, answers it with a hand-made
 * auth message, and must be refused: the WebSocket closes with the documented
 * code (4001 for every authentication failure, 4000 for a malformed message,
 * 1009 above maxPayload), with an empty close reason (the server is not an
 * oracle), no WELCOME, and an `auth.failure` audit line that names the precise
 * reason. A control test first proves that the forging helpers produce a
 * token the server accepts, so every refusal below is the check under attack.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { ReflectorServer } from '../../server/index.js';
import { AUTH_JWT_TYPE, CloseCode } from '../../shared/constants.js';
import type { ClientEntry, ServerConfig } from '../../shared/config-schema.js';
import { ErrorCode } from '../../shared/errors.js';
import { generateIdentity, type Identity } from '../../shared/keys.js';
import {
  makeKeys,
  memoryLogger,
  serverConfig,
  startEchoBackend,
  startServerWith,
  waitFor,
  type Backend,
  type KeySet,
  type MemoryLog,
} from '../helpers/fixtures.js';
import {
  authText,
  closeOf,
  dialRaw,
  forgeToken,
  honestClaims,
  honestHeader,
  rawHandshake,
  signEdDSA,
  signHS256,
  unsigned,
  type CloseInfo,
  type RawConnection,
} from '../helpers/hostile-client.js';
import { connectScriptedPeer } from '../helpers/scripted-peer.js';

const nowS = (): number => Math.floor(Date.now() / 1000);

interface AuditFailure {
  event: string;
  code: string;
  reason: string;
  address: string;
}

describe('JWT attacks are refused', () => {
  let keys: KeySet;
  let bob: Identity;
  let stranger: Identity;
  let echo: Backend;
  let log: MemoryLog;
  let server: ReflectorServer;
  let config: ServerConfig;
  const open: RawConnection[] = [];

  const client = (name: string, identity: Identity): ClientEntry => ({ name, publicKey: identity, services: ['echo'] });

  before(async () => {
    keys = await makeKeys();
    bob = await generateIdentity();
    stranger = await generateIdentity();
    echo = await startEchoBackend();
    log = memoryLogger('debug');
    const base = serverConfig(keys, { echo: echo.target });
    config = { ...base, clients: [...base.clients, client('bob', bob)] };
    server = await startServerWith(config, log.logger);
  });

  after(async () => {
    for (const connection of open) connection.ws.terminate();
    await server?.close();
    await echo?.close();
    await keys?.cleanup();
  });

  async function connect(): Promise<RawConnection> {
    const connection = await dialRaw(server.url);
    open.push(connection);
    return connection;
  }

  /** The auth.failure audit lines written since line `from`. */
  function failuresSince(from: number): AuditFailure[] {
    return log
      .entries()
      .slice(from)
      .filter((entry) => entry.event === 'auth.failure') as unknown as AuditFailure[];
  }

  /**
   * Sends `auth` (a text, or raw bytes) on a fresh connection and checks the
   * refusal: close code, empty reason, no WELCOME, one audit line naming `reason`.
   */
  async function assertRefused(
    connection: RawConnection,
    auth: string | Buffer,
    expected: { close: number; code: string; reason: RegExp },
  ): Promise<CloseInfo> {
    const from = log.lines.length;
    const sessionsBefore = server.listSessions().length;
    connection.send(auth, { binary: Buffer.isBuffer(auth) });
    const closed = await closeOf(connection);
    assert.equal(closed.code, expected.close, `close code: expected ${expected.close}, got ${closed.code}`);
    assert.equal(closed.reason, '', 'the close reason must not tell the attacker which check failed');
    assert.equal(connection.messages.length, 0, 'the server sent something after hello (a WELCOME?) to a refused client');
    await waitFor(() => failuresSince(from).length > 0, 'the auth.failure audit line');
    const failures = failuresSince(from);
    assert.equal(failures.length, 1, `one audit line per refused connection, got ${JSON.stringify(failures)}`);
    const [failure] = failures as [AuditFailure];
    assert.equal(failure.code, expected.code, `audit code (reason: ${failure.reason})`);
    assert.match(failure.reason, expected.reason);
    assert.equal(failure.address, '127.0.0.1');
    assert.equal(server.listSessions().length, sessionsBefore, 'a refused client got a session');
    return closed;
  }

  /** Honest claims for this connection with `changes` applied, signed by `signer` under `header`. */
  function token(
    connection: RawConnection,
    changes: Record<string, unknown> = {},
    header: Record<string, unknown> = honestHeader(keys.client),
    signer = signEdDSA(keys.client.privateKey),
  ): string {
    const { claims } = honestClaims(connection.hello, connection.helloText);
    return forgeToken(header, { ...claims, ...changes }, signer);
  }

  const badToken = (reason: RegExp) => ({ close: CloseCode.AUTH_FAILED, code: ErrorCode.AUTH_BAD_TOKEN, reason });
  const badClaims = (reason: RegExp) => ({ close: CloseCode.AUTH_FAILED, code: ErrorCode.AUTH_BAD_CLAIMS, reason });
  const malformed = (reason: RegExp) => ({ close: CloseCode.PROTOCOL_ERROR, code: ErrorCode.HANDSHAKE_MALFORMED, reason });

  it('accepts a hand-forged token with honest claims (control: the helpers sign what the server expects)', async () => {
    const connection = await connect();
    connection.send(authText(token(connection)));
    const welcome = await connection.nextMessage();
    assert.equal(welcome.isBinary, true, 'expected the WELCOME record');
    await waitFor(() => server.listSessions().length === 1, 'the session');
    connection.ws.close(1000);
    await closeOf(connection);
    await waitFor(() => server.listSessions().length === 0, 'the session to end');
  });

  it('refuses alg "none" (unsigned token), in any spelling', async () => {
    for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
      const connection = await connect();
      const forged = token(connection, {}, { ...honestHeader(keys.client), alg }, unsigned);
      await assertRefused(connection, authText(forged), badToken(new RegExp(`alg "${alg}" is not allowed \\(only "EdDSA"\\)`)));
    }
    const connection = await connect();
    const { alg: _dropped, ...noAlg } = honestHeader(keys.client);
    await assertRefused(connection, authText(token(connection, {}, noAlg, unsigned)), badToken(/alg missing is not allowed/));
  });

  it('refuses HS256 keyed with the server\'s public host key (algorithm confusion), whatever encoding of the key', async () => {
    const hostX = Buffer.from(keys.host.publicJwk.x, 'base64url');
    const secrets: Array<[string, Buffer | string]> = [
      ['raw public key bytes', hostX],
      ['base64url "x"', keys.host.publicJwk.x],
      ['the public JWK as JSON', JSON.stringify(keys.host.publicJwk)],
      ['SPKI PEM', keys.host.publicKey.export({ type: 'spki', format: 'pem' }) as string],
      ['the host thumbprint', keys.host.thumbprint],
      ['the client\'s public key', JSON.stringify(keys.client.publicJwk)],
    ];
    for (const [, secret] of secrets) {
      for (const alg of ['HS256', 'HS512']) {
        const connection = await connect();
        const forged = token(connection, {}, { ...honestHeader(keys.client), alg }, signHS256(secret));
        await assertRefused(connection, authText(forged), badToken(new RegExp(`alg "${alg}" is not allowed`)));
      }
    }
    // Claiming EdDSA while carrying an HMAC is just a bad signature.
    const connection = await connect();
    const forged = token(connection, {}, honestHeader(keys.client), signHS256(hostX));
    await assertRefused(connection, authText(forged), badToken(/signature does not verify with the authorized key/));
  });

  it('refuses other JOSE algorithms and header tricks (Ed25519 alias, ES256, embedded jwk, crit, wrong typ)', async () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ ...honestHeader(keys.client), alg: 'Ed25519' }, /alg "Ed25519" is not allowed/],
      [{ ...honestHeader(keys.client), alg: 'ES256' }, /alg "ES256" is not allowed/],
      [{ ...honestHeader(keys.client), alg: 'RS256' }, /alg "RS256" is not allowed/],
      // The attacker's own key in the header: must never be used to verify.
      [{ ...honestHeader(stranger), jwk: stranger.publicJwk }, /unexpected parameter "jwk"/],
      [{ ...honestHeader(keys.client), crit: ['exp'] }, /unexpected parameter "crit"/],
      [{ ...honestHeader(keys.client), typ: 'JWT' }, /typ "JWT" is not "reflector-auth\+jwt"/],
      [{ ...honestHeader(keys.client), typ: `application/${AUTH_JWT_TYPE}` }, /typ "application\/reflector-auth\+jwt" is not/],
      [{ ...honestHeader(keys.client), kid: '../../../etc/passwd' }, /kid is not a JWK thumbprint/],
    ];
    for (const [header, reason] of cases) {
      const connection = await connect();
      const signer = header.jwk ? signEdDSA(stranger.privateKey) : signEdDSA(keys.client.privateKey);
      await assertRefused(connection, authText(token(connection, {}, header, signer)), badToken(reason));
    }
  });

  it('refuses a valid token made for another server (aud is another host key)', async () => {
    const otherServer = await generateIdentity();
    const connection = await connect();
    await assertRefused(
      connection,
      authText(token(connection, { aud: otherServer.thumbprint })),
      badClaims(new RegExp(`"aud" "${otherServer.thumbprint}" is not this server's host key thumbprint ${keys.host.thumbprint}`)),
    );
    // An array that also names this server does not slip past the exact-string rule.
    const second = await connect();
    await assertRefused(
      second,
      authText(token(second, { aud: [otherServer.thumbprint, keys.host.thumbprint] })),
      badClaims(/claims "aud": expected string/),
    );
  });

  it('refuses an expired token', async () => {
    const connection = await connect();
    const iat = nowS() - 600;
    await assertRefused(connection, authText(token(connection, { iat, exp: iat + 30 })), badClaims(/auth token expired: "exp" \d+ is more than 30 s before now/));
  });

  it('refuses a token issued far in the future, and one that lives longer than 60 s', async () => {
    const connection = await connect();
    const iat = nowS() + 3600;
    await assertRefused(connection, authText(token(connection, { iat, exp: iat + 30 })), badClaims(/"iat" \d+ is 3[56]\d\d s in the future \(tolerance 30 s\)/));
    const longLived = await connect();
    await assertRefused(
      longLived,
      authText(token(longLived, { iat: nowS(), exp: nowS() + 86_400 })),
      badClaims(/lifetime exp - iat = 8640\d s is outside 1\.\.60 s/),
    );
  });

  it('refuses a captured auth replayed on a new connection (nonce from another connection)', async () => {
    // The victim's connection: an honest auth is captured before it is delivered.
    const victim = await connect();
    const captured = authText(token(victim));
    const attacker = await connect();
    await assertRefused(attacker, captured, badClaims(/nonce is not this connection's challenge/));
    // The same auth on the connection it was made for is accepted: it was genuine.
    victim.send(captured);
    assert.equal((await victim.nextMessage()).isBinary, true, 'the captured auth was not valid for its own connection');
    // Once used, it is worth nothing anywhere else either.
    const later = await connect();
    await assertRefused(later, captured, badClaims(/nonce is not this connection's challenge/));
    victim.ws.close(1000);
    await closeOf(victim);
    await waitFor(() => server.listSessions().length === 0, 'the victim session to end');
  });

  it('refuses an honest scripted client\'s auth replayed after its session ended', async () => {
    // A real handshake, recorded by a TLS-terminating middlebox, then replayed.
    const first = await connect();
    const session = await rawHandshake(first, keys.client);
    first.ws.close(1000);
    await closeOf(first);
    const replay = await connect();
    await assertRefused(replay, session.authText, badClaims(/nonce is not this connection's challenge/));
  });

  it('refuses a token whose th does not match the hello this server sent', async () => {
    const connection = await connect();
    const altered = connection.helloText.replace(connection.hello.challenge, connection.hello.challenge.split('').reverse().join(''));
    const th = createHash('sha256').update(altered).digest('base64url');
    await assertRefused(connection, authText(token(connection, { th })), badClaims(/th is not the SHA-256 of the hello this server sent/));
  });

  it('refuses an unknown kid, and a known kid with a signature by another key', async () => {
    const connection = await connect();
    await assertRefused(
      connection,
      authText(token(connection, {}, honestHeader(stranger), signEdDSA(stranger.privateKey))),
      { close: CloseCode.AUTH_FAILED, code: ErrorCode.AUTH_UNKNOWN_KEY, reason: new RegExp(`no authorized client key with thumbprint ${stranger.thumbprint}`) },
    );
    const impostor = await connect();
    await assertRefused(
      impostor,
      authText(token(impostor, {}, honestHeader(keys.client), signEdDSA(stranger.privateKey))),
      badToken(new RegExp(`signature does not verify with the authorized key ${keys.client.thumbprint}`)),
    );
  });

  it('refuses claims the schema does not list, and a low-order epk', async () => {
    const extra = await connect();
    await assertRefused(extra, authText(token(extra, { sub: 'admin' })), badClaims(/unexpected key "sub"/));
    const lowOrder = await connect();
    await assertRefused(
      lowOrder,
      authText(token(lowOrder, { epk: Buffer.alloc(32).toString('base64url') })),
      badClaims(/epk is not a usable X25519 public key/),
    );
  });

  it('refuses a token larger than the 8 KiB limit (4000), and one above maxPayload (1009)', async () => {
    const connection = await connect();
    const padded = authText(token(connection, { pad: 'A'.repeat(9000) }));
    await assertRefused(connection, padded, malformed(/auth message of \d+ bytes exceeds 8192/));
    const huge = await connect();
    const enormous = authText(token(huge, { pad: 'A'.repeat(256 * 1024) }));
    await assertRefused(huge, enormous, { close: CloseCode.MESSAGE_TOO_BIG, code: ErrorCode.HANDSHAKE_MALFORMED, reason: /connection closed \(\d+\) before auth/ });
  });

  it('refuses malformed JSON at every layer: the auth message, the JWT header, the JWT claims', async () => {
    const truncated = await connect();
    await assertRefused(truncated, '{"type":"auth","token":"a.b.', malformed(/auth is not valid JSON/));
    const extraKey = await connect();
    await assertRefused(extraKey, JSON.stringify({ type: 'auth', token: token(extraKey), admin: true }), malformed(/unexpected key "admin"/));
    const notJws = await connect();
    await assertRefused(notJws, JSON.stringify({ type: 'auth', token: 'not a jws' }), malformed(/"token": must be a compact JWS/));
    const binary = await connect();
    await assertRefused(binary, Buffer.from(authText(token(binary))), malformed(/binary message where the auth message was expected/));
    const badHeader = await connect();
    await assertRefused(badHeader, authText(forgeToken('{"alg":"EdDSA",', {}, signEdDSA(keys.client.privateKey))), badToken(/header is not base64url JSON/));
    const badClaimsJson = await connect();
    const { claims } = honestClaims(badClaimsJson.hello, badClaimsJson.helloText);
    await assertRefused(
      badClaimsJson,
      authText(forgeToken(honestHeader(keys.client), JSON.stringify(claims).slice(0, -1), signEdDSA(keys.client.privateKey))),
      badToken(/rejected \(ERR_JWT_INVALID\)/),
    );
  });

  it('refuses a second auth message on the same connection (a challenge answers one auth only)', async () => {
    const connection = await connect();
    const auth = authText(token(connection));
    const socket = (connection.ws as unknown as { _socket: import('node:net').Socket })._socket;
    // Both messages in one TCP write, as a replaying middlebox would send them.
    socket.cork();
    connection.send(auth);
    connection.send(auth);
    socket.uncork();
    const outcome = await Promise.race([
      closeOf(connection).then((closed) => `closed with ${closed.code}`),
      connection.nextMessage().then(
        (message) => `answered with a ${message.isBinary ? 'binary' : 'text'} message (WELCOME): the second auth was silently dropped`,
        // Closed without a message: the close branch reports the code.
        () => new Promise<string>(() => undefined),
      ),
    ]);
    assert.equal(outcome, `closed with ${CloseCode.PROTOCOL_ERROR}`, 'a second message during the handshake is a protocol error (docs/protocol.md §3.2)');
  });

  it('refuses the kid of a client removed by a reload, and closes its live session with 4005', async () => {
    const live = await connectScriptedPeer({ url: server.url, identity: bob });
    server.reload({ ...config, clients: config.clients.filter((entry) => entry.name !== 'bob') });
    const { code } = await closeOf({ closed: live.closed });
    assert.equal(code, CloseCode.KEY_REVOKED);
    const connection = await connect();
    await assertRefused(
      connection,
      authText(token(connection, {}, honestHeader(bob), signEdDSA(bob.privateKey))),
      { close: CloseCode.AUTH_FAILED, code: ErrorCode.AUTH_UNKNOWN_KEY, reason: new RegExp(`no authorized client key with thumbprint ${bob.thumbprint}`) },
    );
    // Still welcome: the other client.
    const tester = await connect();
    tester.send(authText(token(tester)));
    assert.equal((await tester.nextMessage()).isBinary, true);
    tester.ws.close(1000);
    await closeOf(tester);
    server.reload(config);
  });
});
