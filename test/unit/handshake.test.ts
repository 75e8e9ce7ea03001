import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { before, describe, it } from 'node:test';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { decodeJwt, decodeProtectedHeader, SignJWT, type JWTHeaderParameters, type JWTPayload } from 'jose';
import { AUTH_JWT_TYPE, CloseCode, Label, MAX_HANDSHAKE_MESSAGE_BYTES, type CloseCodeValue } from '../../shared/constants.js';
import { AuthError, ErrorCode, IdentityError, ProtocolError, ReflectorError, type ErrorCodeValue } from '../../shared/errors.js';
import {
  buildWelcome,
  finishServerHandshake,
  KemKeyCache,
  parseHello,
  respondToHello,
  startServerHandshake,
  verifyWelcome,
  type Hello,
  type KemKeyPair,
  type ServerHandshake,
  type WelcomeBody,
} from '../../shared/handshake.js';
import { deriveSessionKeys, type SessionKeys } from '../../shared/key-schedule.js';
import { generateIdentity, type Identity } from '../../shared/keys.js';

type ErrorClass = typeof ProtocolError | typeof AuthError | typeof IdentityError;

/** An assert.rejects/throws validator: class, code, close code and (optionally) the message. */
function fails(kind: ErrorClass, code: ErrorCodeValue, closeCode: CloseCodeValue, message?: RegExp) {
  return (error: unknown): boolean => {
    assert.ok(error instanceof kind, `expected ${kind.name}, got ${String(error)}`);
    assert.equal(error.code, code);
    assert.equal(error.closeCode, closeCode);
    if (message !== undefined) assert.match(error.message, message);
    return true;
  };
}
const authFails = (code: ErrorCodeValue, message?: RegExp) => fails(AuthError, code, CloseCode.AUTH_FAILED, message);
const malformed = (message?: RegExp) => fails(ProtocolError, ErrorCode.HANDSHAKE_MALFORMED, CloseCode.PROTOCOL_ERROR, message);
const welcomeFails = (message?: RegExp) => fails(IdentityError, ErrorCode.WELCOME_INVALID, CloseCode.SERVER_IDENTITY_REJECTED, message);

const body: WelcomeBody = {
  window: 256 * 1024,
  maxStreams: 1024,
  maxRecord: 128 * 1024,
  rekeyBytes: 1024 ** 3,
  pingInterval: 25_000,
  resume: 60_000,
  services: ['smtp', 'pop3', 'nntp'],
};

let host: Identity;
let client: Identity;
let mallory: Identity;
let kem: KemKeyPair;

before(async () => {
  [host, client, mallory] = await Promise.all([generateIdentity(), generateIdentity(), generateIdentity()]);
  kem = ml_kem768.keygen();
});

/** Looks up the one authorized client, and counts lookups. */
function authorized(): { lookup: (thumbprint: string) => KeyObject | undefined; calls: string[] } {
  const calls: string[] = [];
  return { calls, lookup: (t) => (calls.push(t), t === client.thumbprint ? client.publicKey : undefined) };
}

interface Run {
  hs: ServerHandshake;
  hello: Hello;
  authText: string;
  keys: SessionKeys;
}

async function clientRun(nowMs?: number): Promise<Run> {
  const hs = startServerHandshake(host, kem);
  const hello = await parseHello(hs.helloText);
  const { authText, keys } = await respondToHello(hello, hs.helloText, client, nowMs);
  return { hs, hello, authText, keys };
}

const tokenOf = (authText: string): string => (JSON.parse(authText) as { token: string }).token;
const authWith = (token: string): string => JSON.stringify({ type: 'auth', token });

/** Re-signs an auth token after changing its header or claims. */
async function resign(
  authText: string,
  change: { claims?: (c: JWTPayload) => void; header?: (h: JWTHeaderParameters) => void; key?: KeyObject | Uint8Array },
): Promise<string> {
  const token = tokenOf(authText);
  const claims = decodeJwt(token);
  const header = decodeProtectedHeader(token) as JWTHeaderParameters;
  change.claims?.(claims);
  change.header?.(header);
  return authWith(await new SignJWT(claims).setProtectedHeader(header).sign(change.key ?? client.privateKey));
}

const b64uJson = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');

describe('handshake between an honest client and server', () => {
  it('derives the same session keys on both sides and the welcome verifies', async () => {
    const run = await clientRun();
    const { lookup } = authorized();
    const result = await finishServerHandshake(run.hs, run.authText, lookup);
    assert.equal(result.clientThumbprint, client.thumbprint);
    assert.deepEqual(result.keys, run.keys);
    const welcome = buildWelcome(host, result.keys, { ...body, replica: 'gw-2' });
    assert.deepEqual(verifyWelcome(welcome, run.hello, run.keys), { ...body, replica: 'gw-2' });
    assert.deepEqual(verifyWelcome(buildWelcome(host, result.keys, body), run.hello, run.keys), body);
  });

  it('sends a hello with exactly the v1 fields and the host key', async () => {
    const hs = startServerHandshake(host, kem);
    const wire = JSON.parse(hs.helloText) as Record<string, unknown>;
    assert.deepEqual(Object.keys(wire), ['type', 'version', 'challenge', 'x25519', 'mlkem', 'hostKey']);
    assert.equal(wire.challenge, hs.challenge);
    assert.deepEqual(wire.hostKey, host.publicJwk);
    const hello = await parseHello(hs.helloText);
    assert.equal(hello.hostKey.thumbprint, host.thumbprint);
    assert.deepEqual(hello.mlkem, kem.publicKey);
    assert.notEqual(startServerHandshake(host, kem).challenge, hs.challenge);
  });

  it('sends an auth JWT with the v1 header and claims, exp = iat + 30', async () => {
    const now = Date.UTC(2030, 0, 1);
    const run = await clientRun(now);
    assert.ok(Buffer.byteLength(run.authText) <= MAX_HANDSHAKE_MESSAGE_BYTES);
    const token = tokenOf(run.authText);
    assert.deepEqual(decodeProtectedHeader(token), { alg: 'EdDSA', typ: AUTH_JWT_TYPE, kid: client.thumbprint });
    const claims = decodeJwt(token);
    assert.deepEqual(Object.keys(claims).sort(), ['aud', 'epk', 'exp', 'iat', 'kem', 'nonce', 'th']);
    assert.equal(claims.aud, host.thumbprint);
    assert.equal(claims.nonce, run.hs.challenge);
    assert.equal(claims.th, createHash('sha256').update(run.hs.helloText).digest('base64url'));
    assert.equal(claims.iat, now / 1000);
    assert.equal(claims.exp, now / 1000 + 30);
    await finishServerHandshake(run.hs, run.authText, authorized().lookup, now + 5_000);
  });
});

describe('KemKeyCache', () => {
  it('reuses one key pair for maxAgeMs, then generates a new one', () => {
    let now = 0;
    const cache = new KemKeyCache(60_000, () => now);
    const first = cache.current();
    now = 59_999;
    assert.equal(cache.current(), first);
    now = 60_000;
    const second = cache.current();
    assert.notEqual(second, first);
    assert.notDeepEqual(second.publicKey, first.publicKey);
    now = 10; // a clock that went backwards retires the pair too
    assert.notEqual(cache.current(), second);
  });
});

describe('parseHello', () => {
  let helloText: string;
  let wire: Record<string, unknown>;
  before(() => {
    helloText = startServerHandshake(host, kem).helloText;
    wire = JSON.parse(helloText) as Record<string, unknown>;
  });
  const variant = (change: Record<string, unknown>): string => JSON.stringify({ ...wire, ...change });

  it('rejects another protocol version with HANDSHAKE_VERSION', async () => {
    await assert.rejects(
      parseHello(variant({ version: 2 })),
      fails(ProtocolError, ErrorCode.HANDSHAKE_VERSION, CloseCode.VERSION_UNSUPPORTED, /version 2/),
    );
  });

  it('rejects a version that is not a number as malformed', async () => {
    await assert.rejects(parseHello(variant({ version: '1' })), malformed(/^hello "version": expected 1$/));
  });

  it('rejects text that is not JSON', async () => {
    await assert.rejects(parseHello(helloText.slice(0, -1)), malformed(/not valid JSON/));
  });

  it('rejects unknown keys', async () => {
    await assert.rejects(parseHello(variant({ compression: true })), malformed(/unexpected key "compression"/));
    await assert.rejects(parseHello(variant({ hostKey: { ...host.publicJwk, d: 'x' } })), malformed(/^hello "hostKey": unexpected key "d"$/));
  });

  it('rejects a message of another type', async () => {
    await assert.rejects(parseHello(variant({ type: 'auth' })), malformed(/"type"/));
  });

  it('rejects binary fields of the wrong length, padded or not canonical', async () => {
    const challenge = wire.challenge as string;
    for (const bad of [challenge.slice(1), `${challenge}=`, Buffer.from(challenge, 'base64url').toString('base64'), `${challenge.slice(0, -1)}!`]) {
      await assert.rejects(parseHello(variant({ challenge: bad })), malformed(/^hello "challenge": must be 32 bytes/));
    }
    await assert.rejects(parseHello(variant({ x25519: Buffer.alloc(33).toString('base64url') })), malformed(/"x25519"/));
    await assert.rejects(parseHello(variant({ mlkem: Buffer.alloc(1183).toString('base64url') })), malformed(/"mlkem"/));
  });

  it('rejects an ML-KEM key whose coefficients are not reduced mod q (FIPS 203 modulus check)', async () => {
    const ek = Buffer.from(kem.publicKey);
    ek[0] = 0xff;
    ek[1] = 0xff;
    assert.throws(() => ml_kem768.encapsulate(ek)); // the library agrees the key is invalid
    await assert.rejects(parseHello(variant({ mlkem: ek.toString('base64url') })), malformed(/not a valid ML-KEM-768/));
  });

  it('rejects a hello larger than 8 KiB before parsing it', async () => {
    await assert.rejects(parseHello(helloText + ' '.repeat(MAX_HANDSHAKE_MESSAGE_BYTES)), malformed(/more than 8192/));
  });

  it('rejects a hostKey that is not an Ed25519 JWK', async () => {
    await assert.rejects(parseHello(variant({ hostKey: { ...host.publicJwk, crv: 'X25519' } })), malformed(/"hostKey.crv"/));
  });

  it('rejects a small-order hostKey, under which a forged WELCOME signature would verify with OpenSSL', async () => {
    const identityPoint = Buffer.alloc(32);
    identityPoint[0] = 1;
    await assert.rejects(
      parseHello(variant({ hostKey: { ...host.publicJwk, x: identityPoint.toString('base64url') } })),
      malformed(/^hello hostKey is not a usable Ed25519 public key$/),
    );
  });
});

describe('finishServerHandshake', () => {
  it('rejects "alg": "none" before looking up any key', async () => {
    const run = await clientRun();
    const token = tokenOf(run.authText);
    const none = `${b64uJson({ alg: 'none', typ: AUTH_JWT_TYPE, kid: client.thumbprint })}.${token.split('.')[1]}.`;
    const { lookup, calls } = authorized();
    await assert.rejects(finishServerHandshake(run.hs, authWith(none), lookup), authFails(ErrorCode.AUTH_BAD_TOKEN, /alg "none" is not allowed/));
    assert.deepEqual(calls, []);
  });

  it("rejects an HS256 token keyed with the server's public key bytes (algorithm confusion)", async () => {
    const run = await clientRun();
    const secret = Buffer.from(host.publicJwk.x, 'base64url');
    const hs256 = await resign(run.authText, { header: (h) => (h.alg = 'HS256'), key: secret });
    const { lookup, calls } = authorized();
    await assert.rejects(finishServerHandshake(run.hs, hs256, lookup), authFails(ErrorCode.AUTH_BAD_TOKEN, /alg "HS256" is not allowed/));
    assert.deepEqual(calls, []);
  });

  it("rejects an HS256 token keyed with the client's public key bytes", async () => {
    const run = await clientRun();
    const secret = Buffer.from(client.publicJwk.x, 'base64url');
    const hs256 = await resign(run.authText, { header: (h) => (h.alg = 'HS256'), key: secret });
    await assert.rejects(finishServerHandshake(run.hs, hs256, authorized().lookup), authFails(ErrorCode.AUTH_BAD_TOKEN));
  });

  it('rejects another typ before looking up any key', async () => {
    const run = await clientRun();
    const jwt = await resign(run.authText, { header: (h) => (h.typ = 'JWT') });
    const { lookup, calls } = authorized();
    await assert.rejects(finishServerHandshake(run.hs, jwt, lookup), authFails(ErrorCode.AUTH_BAD_TOKEN, /typ "JWT"/));
    assert.deepEqual(calls, []);
  });

  it('rejects header parameters beyond alg, typ and kid (an embedded jwk is never trusted)', async () => {
    const run = await clientRun();
    const withJwk = await resign(run.authText, { header: (h) => (h.jwk = mallory.publicJwk), key: mallory.privateKey });
    await assert.rejects(finishServerHandshake(run.hs, withJwk, authorized().lookup), authFails(ErrorCode.AUTH_BAD_TOKEN, /unexpected parameter "jwk"/));
  });

  it('rejects an unknown kid with AUTH_UNKNOWN_KEY naming the thumbprint', async () => {
    const run = await clientRun();
    await assert.rejects(
      finishServerHandshake(run.hs, run.authText, () => undefined),
      authFails(ErrorCode.AUTH_UNKNOWN_KEY, new RegExp(`^no authorized client key with thumbprint ${client.thumbprint}$`)),
    );
  });

  it("rejects a token that claims the client's kid but is signed by another key", async () => {
    const run = await clientRun();
    const forged = await resign(run.authText, { key: mallory.privateKey });
    await assert.rejects(finishServerHandshake(run.hs, forged, authorized().lookup), authFails(ErrorCode.AUTH_BAD_TOKEN, /signature does not verify/));
  });

  it('rejects a token whose claims were altered after signing', async () => {
    const run = await clientRun();
    const [header, , signature] = tokenOf(run.authText).split('.');
    const claims = decodeJwt(tokenOf(run.authText));
    const altered = `${header}.${b64uJson({ ...claims, exp: (claims.exp as number) + 1 })}.${signature}`;
    await assert.rejects(finishServerHandshake(run.hs, authWith(altered), authorized().lookup), authFails(ErrorCode.AUTH_BAD_TOKEN));
  });

  it('rejects a token for another server (wrong aud)', async () => {
    const run = await clientRun();
    const jwt = await resign(run.authText, { claims: (c) => (c.aud = mallory.thumbprint) });
    await assert.rejects(
      finishServerHandshake(run.hs, jwt, authorized().lookup),
      authFails(ErrorCode.AUTH_BAD_CLAIMS, new RegExp(`"aud" "${mallory.thumbprint}" is not this server's host key thumbprint ${host.thumbprint}`)),
    );
  });

  it('rejects an expired token', async () => {
    const now = Date.now();
    const run = await clientRun(now - 120_000);
    await assert.rejects(finishServerHandshake(run.hs, run.authText, authorized().lookup, now), authFails(ErrorCode.AUTH_BAD_CLAIMS, /expired/));
  });

  it('accepts a token within the clock tolerance on either side', async () => {
    const now = Date.now();
    const late = await clientRun(now - 50_000); // exp 20 s ago, tolerance 30 s
    await finishServerHandshake(late.hs, late.authText, authorized().lookup, now);
    const early = await clientRun(now + 25_000); // iat 25 s ahead
    await finishServerHandshake(early.hs, early.authText, authorized().lookup, now);
  });

  it('rejects a token issued more than 30 s in the future', async () => {
    const now = Date.now();
    const run = await clientRun(now + 120_000);
    await assert.rejects(finishServerHandshake(run.hs, run.authText, authorized().lookup, now), authFails(ErrorCode.AUTH_BAD_CLAIMS, /"iat" .* in the future/));
  });

  it('rejects a token that lives longer than 60 s', async () => {
    const run = await clientRun();
    const jwt = await resign(run.authText, { claims: (c) => (c.exp = (c.iat as number) + 61) });
    await assert.rejects(finishServerHandshake(run.hs, jwt, authorized().lookup), authFails(ErrorCode.AUTH_BAD_CLAIMS, /lifetime exp - iat = 61 s/));
  });

  it('rejects an auth captured on one connection and replayed on another (nonce mismatch)', async () => {
    const captured = await clientRun();
    const victim = startServerHandshake(host, kem);
    await assert.rejects(
      finishServerHandshake(victim, captured.authText, authorized().lookup),
      authFails(ErrorCode.AUTH_BAD_CLAIMS, /nonce is not this connection's challenge/),
    );
  });

  it('rejects a token whose th is not the hash of the hello this server sent', async () => {
    const run = await clientRun();
    const jwt = await resign(run.authText, { claims: (c) => (c.th = createHash('sha256').update('another hello').digest('base64url')) });
    await assert.rejects(finishServerHandshake(run.hs, jwt, authorized().lookup), authFails(ErrorCode.AUTH_BAD_CLAIMS, /th is not the SHA-256/));
  });

  it('rejects missing and unknown claims', async () => {
    const cases: [(c: JWTPayload) => unknown, RegExp][] = [
      [(c) => delete c.epk, /^auth token claims "epk" is missing$/],
      [(c) => delete c.aud, /^auth token claims "aud" is missing$/],
      [(c) => (c.sub = 'alice'), /^auth token claims: unexpected key "sub"$/],
      [(c) => (c.aud = [host.thumbprint]), /^auth token claims "aud": expected string, received array$/],
      [(c) => (c.iat = 'now' as unknown as number), /"iat"/],
    ];
    for (const [change, message] of cases) {
      const run = await clientRun();
      const jwt = await resign(run.authText, { claims: change });
      await assert.rejects(finishServerHandshake(run.hs, jwt, authorized().lookup), authFails(ErrorCode.AUTH_BAD_CLAIMS, message));
    }
  });

  it('rejects an epk that is not 32 bytes, or is a low-order X25519 point', async () => {
    for (const [epk, message] of [
      [Buffer.alloc(31, 1).toString('base64url'), /epk must be 32 bytes/],
      [Buffer.alloc(32).toString('base64url'), /low-order point/],
    ] as const) {
      const run = await clientRun();
      const jwt = await resign(run.authText, { claims: (c) => (c.epk = epk) });
      await assert.rejects(finishServerHandshake(run.hs, jwt, authorized().lookup), authFails(ErrorCode.AUTH_BAD_CLAIMS, message));
    }
  });

  it('rejects a kem ciphertext of the wrong length', async () => {
    const run = await clientRun();
    const jwt = await resign(run.authText, { claims: (c) => (c.kem = Buffer.alloc(1087).toString('base64url')) });
    await assert.rejects(finishServerHandshake(run.hs, jwt, authorized().lookup), authFails(ErrorCode.AUTH_BAD_CLAIMS, /kem must be 1088 bytes/));
  });

  it('derives keys the client cannot match from a kem ciphertext for another key (ML-KEM implicit rejection)', async () => {
    const run = await clientRun();
    const other = ml_kem768.encapsulate(ml_kem768.keygen().publicKey).cipherText;
    const jwt = await resign(run.authText, { claims: (c) => (c.kem = Buffer.from(other).toString('base64url')) });
    const result = await finishServerHandshake(run.hs, jwt, authorized().lookup);
    assert.throws(() => verifyWelcome(buildWelcome(host, result.keys, body), run.hello, run.keys), welcomeFails());
  });

  it('accepts one auth per handshake: a second call fails even with a valid auth', async () => {
    const run = await clientRun();
    await finishServerHandshake(run.hs, run.authText, authorized().lookup);
    await assert.rejects(finishServerHandshake(run.hs, run.authText, authorized().lookup), authFails(ErrorCode.AUTH_BAD_CLAIMS, /already used/));
  });

  it('burns the challenge on a failed attempt too', async () => {
    const run = await clientRun();
    await assert.rejects(finishServerHandshake(run.hs, '{', authorized().lookup), malformed());
    await assert.rejects(finishServerHandshake(run.hs, run.authText, authorized().lookup), authFails(ErrorCode.AUTH_BAD_CLAIMS, /already used/));
  });

  it('rejects an auth larger than 8 KiB before parsing it or looking up a key', async () => {
    const run = await clientRun();
    const { lookup, calls } = authorized();
    const huge = JSON.stringify({ type: 'auth', token: `${tokenOf(run.authText)}${'A'.repeat(MAX_HANDSHAKE_MESSAGE_BYTES)}` });
    await assert.rejects(finishServerHandshake(run.hs, huge, lookup), malformed(/more than 8192/));
    assert.deepEqual(calls, []);
  });

  it('counts the size limit in UTF-8 bytes, not characters', async () => {
    const run = await clientRun();
    const text = JSON.stringify({ type: 'auth', token: 'é'.repeat(MAX_HANDSHAKE_MESSAGE_BYTES / 2) });
    assert.ok(text.length < MAX_HANDSHAKE_MESSAGE_BYTES);
    await assert.rejects(finishServerHandshake(run.hs, text, authorized().lookup), malformed(/more than 8192/));
  });

  it('rejects an auth that is not JSON', async () => {
    const run = await clientRun();
    await assert.rejects(finishServerHandshake(run.hs, run.authText.slice(1), authorized().lookup), malformed(/not valid JSON/));
  });

  it('rejects an auth message with extra keys, another type, or a token that is not a compact JWS', async () => {
    const token = tokenOf((await clientRun()).authText);
    for (const [text, message] of [
      [JSON.stringify({ type: 'auth', token, resume: 'x' }), /unexpected key "resume"/],
      [JSON.stringify({ type: 'hello', token }), /"type"/],
      [JSON.stringify({ type: 'auth', token: 42 }), /"token"/],
      [JSON.stringify({ type: 'auth', token: token.split('.').slice(0, 2).join('.') }), /compact JWS/],
      ['[]', /expected object/],
    ] as const) {
      const run = await clientRun();
      await assert.rejects(finishServerHandshake(run.hs, text, authorized().lookup), malformed(message));
    }
  });

  it('maps a token header that is not JSON to AUTH_BAD_TOKEN, never to a jose error', async () => {
    const run = await clientRun();
    const [, payload, signature] = tokenOf(run.authText).split('.');
    const text = authWith(`${Buffer.from('{nope').toString('base64url')}.${payload}.${signature}`);
    await assert.rejects(finishServerHandshake(run.hs, text, authorized().lookup), authFails(ErrorCode.AUTH_BAD_TOKEN));
  });
});

describe('buildWelcome', () => {
  it('refuses a body outside the protocol ranges', () => {
    const keys = deriveSessionKeys(Buffer.alloc(32, 1), Buffer.alloc(32, 2), 'h', 'a');
    assert.throws(
      () => buildWelcome(host, keys, { ...body, window: 0 }),
      (error: unknown) => {
        assert.ok(error instanceof ReflectorError);
        assert.equal(error.code, ErrorCode.INTERNAL);
        assert.equal(error.closeCode, CloseCode.INTERNAL_ERROR);
        assert.match(error.message, /^welcome body "window": too small/);
        return true;
      },
    );
  });
});

describe('verifyWelcome', () => {
  let run: Run;
  let serverKeys: SessionKeys;
  before(async () => {
    run = await clientRun();
    serverKeys = (await finishServerHandshake(run.hs, run.authText, authorized().lookup)).keys;
  });

  /** A welcome with arbitrary fields, correctly signed for `keys`. */
  function signedWelcome(fields: Record<string, unknown>, keys: SessionKeys = serverKeys, signer: Identity = host): Buffer {
    const signed = Buffer.concat([Buffer.from(Label.WELCOME_SIGNATURE), Buffer.from([0]), keys.transcript]);
    const sig = sign(null, signed, signer.privateKey).toString('base64url');
    return Buffer.from(JSON.stringify({ sig, sessionId: keys.sessionId.toString('base64url'), ...body, ...fields }));
  }

  it('accepts a correctly signed welcome (sanity check of the helper)', () => {
    assert.deepEqual(verifyWelcome(signedWelcome({}), run.hello, run.keys), body);
  });

  it('rejects a welcome relayed by a man in the middle who swapped the ephemeral key in hello', async () => {
    // Mallory replaces the server's X25519 key in hello with hers, so the client's
    // transcript differs from the server's; she relays the server's real WELCOME
    // and even rewrites its session id to the one the client derived.
    const hs = startServerHandshake(host, kem);
    const swapped = JSON.stringify({
      ...(JSON.parse(hs.helloText) as object),
      x25519: generateKeyPairSync('x25519').publicKey.export({ format: 'jwk' }).x,
    });
    const hello = await parseHello(swapped);
    const victim = await respondToHello(hello, swapped, client);
    const serverSide = deriveSessionKeys(Buffer.alloc(32, 3), Buffer.alloc(32, 4), hs.helloText, victim.authText);
    const relayed = JSON.parse(buildWelcome(host, serverSide, body).toString()) as Record<string, unknown>;
    relayed.sessionId = victim.keys.sessionId.toString('base64url');
    assert.throws(
      () => verifyWelcome(Buffer.from(JSON.stringify(relayed)), hello, victim.keys),
      welcomeFails(new RegExp(`signature does not verify with host key ${host.thumbprint}`)),
    );
  });

  it("rejects a welcome signed by another host key over this session's transcript", () => {
    assert.throws(() => verifyWelcome(buildWelcome(mallory, run.keys, body), run.hello, run.keys), welcomeFails(/signature does not verify/));
  });

  it('rejects a welcome for another session id', () => {
    const other = deriveSessionKeys(Buffer.alloc(32, 5), Buffer.alloc(32, 6), 'h', 'a');
    assert.throws(() => verifyWelcome(buildWelcome(host, other, body), run.hello, run.keys), welcomeFails(/names session/));
  });

  it('rejects limits outside the protocol ranges even when signed', () => {
    for (const [fields, message] of [
      [{ window: 1023 }, /"window"/],
      [{ window: 2 ** 30 + 1 }, /"window"/],
      [{ maxRecord: 1024 * 1024 + 1 }, /"maxRecord"/],
      [{ maxRecord: 512 }, /"maxRecord"/],
      [{ rekeyBytes: 1024 }, /"rekeyBytes"/],
      [{ maxStreams: 0 }, /"maxStreams"/],
      [{ maxStreams: 2 ** 31 + 1 }, /"maxStreams"/],
      [{ pingInterval: 1.5 }, /"pingInterval"/],
      [{ services: ['SMTP'] }, /"services.0": not a valid service name/],
      [{ services: ['smtp', 'smtp'] }, /a service is listed twice/],
      [{ replica: 'a b' }, /"replica"/],
      [{ extra: 1 }, /^welcome: unexpected key "extra"$/],
      [{ window: undefined }, /^welcome "window" is missing$/],
      [{ sig: 'AAAA' }, /"sig": must be 64 bytes/],
    ] as const) {
      assert.throws(() => verifyWelcome(signedWelcome(fields), run.hello, run.keys), welcomeFails(message));
    }
  });

  it('rejects a payload that is not UTF-8 JSON, or larger than 8 KiB', () => {
    assert.throws(() => verifyWelcome(Buffer.from([0x7b, 0xff, 0x7d]), run.hello, run.keys), welcomeFails(/not UTF-8/));
    assert.throws(() => verifyWelcome(Buffer.from('{"sig":'), run.hello, run.keys), welcomeFails(/not valid JSON/));
    assert.throws(() => verifyWelcome(Buffer.alloc(MAX_HANDSHAKE_MESSAGE_BYTES + 1, 0x20), run.hello, run.keys), welcomeFails(/more than 8192/));
  });
});
