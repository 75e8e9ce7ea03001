/**
 * The handshake's fast paths give exactly what the slower library paths they
 * replace gave: the auth token signed with node:crypto is byte-for-byte
 * jose's SignJWT, the synchronous thumbprint is jose's, and the host-key cache
 * of parseHello never mixes two servers up.
 */
import assert from 'node:assert/strict';
import { randomBytes, sign as cryptoSign } from 'node:crypto';
import { describe, it } from 'node:test';
import { calculateJwkThumbprint, jwtVerify, SignJWT } from 'jose';
import { AUTH_JWT_LIFETIME_S, signAuthToken, verifiedPayloadFastPath } from '../../shared/auth-token.js';
import { AUTH_JWT_TYPE } from '../../shared/constants.js';
import { KemKeyCache, parseHello, startServerHandshake } from '../../shared/handshake.js';
import { generateIdentity, thumbprintOf, thumbprintOfSync } from '../../shared/keys.js';

describe('signAuthToken', () => {
  it('gives the same token as jose SignJWT, which jose verifies', async () => {
    for (let i = 0; i < 10; i += 1) {
      const identity = await generateIdentity();
      const claims = {
        audience: (await generateIdentity()).thumbprint,
        challenge: randomBytes(32).toString('base64url'),
        epk: randomBytes(32).toString('base64url'),
        kem: randomBytes(1088).toString('base64url'),
        helloText: `{"type":"hello","n":${i},"é":"ü"}`,
      };
      const nowMs = Date.now() + i * 1234;
      const ours = await signAuthToken(identity, claims, nowMs);
      const [, payload] = ours.split('.');
      const th = (JSON.parse(Buffer.from(payload!, 'base64url').toString('utf8')) as { th: string }).th;
      const iat = Math.floor(nowMs / 1000);
      const jose = await new SignJWT({ nonce: claims.challenge, epk: claims.epk, kem: claims.kem, th })
        .setProtectedHeader({ alg: 'EdDSA', typ: AUTH_JWT_TYPE, kid: identity.thumbprint })
        .setAudience(claims.audience)
        .setIssuedAt(iat)
        .setExpirationTime(iat + AUTH_JWT_LIFETIME_S)
        .sign(identity.privateKey);
      assert.equal(ours, jose);
      const verified = await jwtVerify(ours, identity.publicKey, { algorithms: ['EdDSA'], typ: AUTH_JWT_TYPE, audience: claims.audience, currentDate: new Date(nowMs) });
      assert.equal(verified.payload.nonce, claims.challenge);
    }
  });

  it('refuses a key that is not Ed25519', async () => {
    const identity = await generateIdentity();
    const { generateKeyPairSync } = await import('node:crypto');
    const x25519 = generateKeyPairSync('x25519').privateKey;
    await assert.rejects(
      signAuthToken({ ...identity, privateKey: x25519 }, { audience: 'a', challenge: 'c', epk: 'e', kem: 'k', helloText: 'h' }, Date.now()),
      /Ed25519/,
    );
  });
});

describe('thumbprintOfSync', () => {
  it('is the RFC 7638 thumbprint jose computes', async () => {
    for (let i = 0; i < 20; i += 1) {
      const { publicJwk, thumbprint } = await generateIdentity();
      const expected = await calculateJwkThumbprint({ ...publicJwk }, 'sha256');
      assert.equal(thumbprintOfSync(publicJwk), expected);
      assert.equal(await thumbprintOf(publicJwk), expected);
      assert.equal(thumbprint, expected);
    }
  });
});

describe('parseHello host key cache', () => {
  it('gives each server its own key and thumbprint, across many servers and repeats', async () => {
    const kem = new KemKeyCache();
    const hosts = await Promise.all(Array.from({ length: 40 }, () => generateIdentity()));
    for (let round = 0; round < 2; round += 1) {
      for (const host of hosts) {
        const hello = await parseHello(startServerHandshake(host, kem.current()).helloText);
        assert.equal(hello.hostKey.thumbprint, host.thumbprint);
        assert.deepEqual(hello.hostKey.publicJwk, host.publicJwk);
        assert.ok(hello.hostKey.publicKey.equals(host.publicKey));
      }
    }
  });

  it('hands out a frozen identity, so one caller cannot change another\'s', async () => {
    const host = await generateIdentity();
    const kem = new KemKeyCache();
    const first = await parseHello(startServerHandshake(host, kem.current()).helloText);
    const second = await parseHello(startServerHandshake(host, kem.current()).helloText);
    assert.ok(Object.isFrozen(first.hostKey) && Object.isFrozen(first.hostKey.publicJwk));
    assert.throws(() => {
      (second.hostKey as { thumbprint: string }).thumbprint = 'x';
    }, TypeError);
    assert.equal(first.hostKey.thumbprint, host.thumbprint);
  });
});

describe('verifyAuthToken fast path', () => {
  const nowMs = Date.now();
  const nowS = Math.floor(nowMs / 1000);
  const jws = (header: object, payload: object, key: import('node:crypto').KeyObject, tamper?: (s: string) => string): string => {
    const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`;
    const sig = cryptoSign(null, Buffer.from(input), key).toString('base64url');
    return `${input}.${tamper ? tamper(sig) : sig}`;
  };

  it('accepts only what jose accepts, and agrees with jose on every case', async () => {
    const client = await generateIdentity();
    const other = await generateIdentity();
    const aud = (await generateIdentity()).thumbprint;
    const header = { alg: 'EdDSA', typ: AUTH_JWT_TYPE, kid: client.thumbprint };
    const base = { nonce: 'n', epk: 'e', kem: 'k', th: 't', aud, iat: nowS, exp: nowS + 30 };
    const flipLast = (s: string): string => `${s.slice(0, -1)}${s.endsWith('A') ? 'B' : 'A'}`;
    const cases: Array<[string, string, boolean]> = [
      ['honest', jws(header, base, client.privateKey), true],
      ['exp just inside the tolerance', jws(header, { ...base, iat: nowS - 40, exp: nowS - 29 }, client.privateKey), true],
      ['exp at the tolerance edge', jws(header, { ...base, iat: nowS - 40, exp: nowS - 30 }, client.privateKey), false],
      ['no exp', jws(header, { ...base, exp: undefined }, client.privateKey), false],
      ['exp a string', jws(header, { ...base, exp: String(nowS + 30) }, client.privateKey), false],
      ['iat a string', jws(header, { ...base, iat: 'now' }, client.privateKey), false],
      ['nbf present', jws(header, { ...base, nbf: nowS - 1 }, client.privateKey), false],
      ['aud of another server', jws(header, { ...base, aud: other.thumbprint }, client.privateKey), false],
      ['aud as an array', jws(header, { ...base, aud: [aud] }, client.privateKey), false],
      ['signed by another key', jws(header, base, other.privateKey), false],
      ['signature altered', jws(header, base, client.privateKey, flipLast), false],
      ['signature truncated', jws(header, base, client.privateKey, (s) => s.slice(0, -2)), false],
      ['payload not an object', `${jws(header, base, client.privateKey).split('.')[0]}.${Buffer.from('[1]').toString('base64url')}.x`, false],
    ];
    for (const [name, token, fast] of cases) {
      const ours = verifiedPayloadFastPath(token, client.publicKey, aud, nowS);
      assert.equal(ours !== undefined, fast, name);
      const jose = await jwtVerify(token, client.publicKey, {
        algorithms: ['EdDSA'],
        typ: AUTH_JWT_TYPE,
        audience: aud,
        clockTolerance: 30,
        currentDate: new Date(nowMs),
      }).then(
        (r) => r.payload,
        () => undefined,
      );
      if (ours !== undefined) assert.deepEqual(ours, jose, `${name}: jose accepts what the fast path accepts, with the same claims`);
    }
  });

  it('leaves a key that is not Ed25519 to jose', async () => {
    const client = await generateIdentity();
    const aud = (await generateIdentity()).thumbprint;
    const token = jws({ alg: 'EdDSA', typ: AUTH_JWT_TYPE, kid: client.thumbprint }, { aud, exp: nowS + 30 }, client.privateKey);
    assert.notEqual(verifiedPayloadFastPath(token, client.publicKey, aud, nowS), undefined);
    assert.equal(verifiedPayloadFastPath(token, client.privateKey, aud, nowS), undefined);
    const { generateKeyPairSync } = await import('node:crypto');
    assert.equal(verifiedPayloadFastPath(token, generateKeyPairSync('ed448').publicKey, aud, nowS), undefined);
  });
});
