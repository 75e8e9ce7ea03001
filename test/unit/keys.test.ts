import assert from 'node:assert/strict';
import { generateKeyPairSync, sign, verify } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CloseCode } from '../../shared/constants.js';
import { ConfigError, ErrorCode } from '../../shared/errors.js';
import {
  decodeBase64UrlExact,
  generateIdentity,
  isThumbprint,
  loadPrivateKeyFile,
  loadPublicKeyFile,
  parsePrivateJwk,
  parsePublicJwk,
  privateJwkOf,
  thumbprintOf,
  writeIdentityFiles,
  type Identity,
} from '../../shared/keys.js';

/** Asserts a KEY_FILE_INVALID ConfigError whose message matches. */
function keyFileError(message: RegExp | string) {
  return (error: unknown): boolean => {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${String(error)}`);
    assert.equal(error.code, ErrorCode.KEY_FILE_INVALID);
    assert.equal(error.closeCode, CloseCode.INTERNAL_ERROR);
    if (typeof message === 'string') assert.equal(error.message, message);
    else assert.match(error.message, message);
    return true;
  };
}

describe('thumbprintOf', () => {
  it('computes the RFC 8037 appendix A.3 thumbprint of the RFC 8037 example key', async () => {
    const jwk = { kty: 'OKP', crv: 'Ed25519', x: '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo' } as const;
    assert.equal(await thumbprintOf(jwk), 'kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k');
  });

  it('gives the same thumbprint for a private JWK and its public half', async () => {
    const identity = await generateIdentity();
    assert.equal(await thumbprintOf(privateJwkOf(identity)), identity.thumbprint);
    assert.ok(isThumbprint(identity.thumbprint));
    assert.equal(identity.thumbprint.length, 43);
  });
});

describe('generateIdentity', () => {
  it('returns a key pair whose private key signs what its public key verifies', async () => {
    const identity = await generateIdentity();
    const message = Buffer.from('reflector');
    assert.ok(verify(null, message, identity.publicKey, sign(null, message, identity.privateKey)));
    assert.deepEqual(Object.keys(identity.publicJwk).sort(), ['crv', 'kty', 'x']);
  });
});

describe('decodeBase64UrlExact', () => {
  it('accepts canonical unpadded base64url of the right length only', () => {
    const bytes = Buffer.alloc(32, 7);
    const text = bytes.toString('base64url');
    assert.deepEqual(decodeBase64UrlExact(text, 32), bytes);
    assert.equal(decodeBase64UrlExact(text, 31), undefined);
    assert.equal(decodeBase64UrlExact(`${text}=`, 32), undefined);
    assert.equal(decodeBase64UrlExact(bytes.toString('base64'), 32), undefined); // padded
    assert.equal(decodeBase64UrlExact(Buffer.alloc(32, 0xfb).toString('base64'), 32), undefined); // '+' and '/'
    // The last character carries 4 spare bits; a non-zero spare bit is a second spelling of the same bytes.
    const last = text.at(-1) as string;
    const alternative = text.slice(0, -1) + String.fromCharCode(last.charCodeAt(0) + 1);
    assert.equal(decodeBase64UrlExact(alternative, 32), undefined);
    assert.equal(decodeBase64UrlExact(42, 32), undefined);
  });
});

describe('parsePrivateJwk', () => {
  let identity: Identity;
  before(async () => {
    identity = await generateIdentity();
  });

  it('accepts a private JWK given as JSON text and derives the same identity', async () => {
    const parsed = await parsePrivateJwk(JSON.stringify(privateJwkOf(identity)), 'alice.jwk');
    assert.equal(parsed.thumbprint, identity.thumbprint);
    assert.deepEqual(parsed.publicJwk, identity.publicJwk);
  });

  it('accepts an already parsed object and ignores extra members such as kid', async () => {
    const parsed = await parsePrivateJwk({ ...privateJwkOf(identity), kid: 'alice' }, 'alice.jwk');
    assert.equal(parsed.thumbprint, identity.thumbprint);
  });

  it('rejects text that is not JSON', async () => {
    await assert.rejects(parsePrivateJwk('{"kty": "OKP",', 'alice.jwk'), keyFileError('alice.jwk: not valid JSON'));
  });

  it('rejects JSON that is not an object', async () => {
    await assert.rejects(parsePrivateJwk('[1, 2]', 'alice.jwk'), keyFileError('alice.jwk: not a JWK (expected a JSON object, got an array)'));
  });

  it('rejects an RSA JWK, naming what it got', async () => {
    await assert.rejects(
      parsePrivateJwk({ kty: 'RSA', n: 'AQAB', e: 'AQAB' }, 'alice.jwk'),
      keyFileError('alice.jwk: not an Ed25519 JWK (expected "kty": "OKP" and "crv": "Ed25519", got "kty": "RSA")'),
    );
  });

  it('rejects an X25519 OKP key, naming its curve', async () => {
    const x25519 = generateKeyPairSync('x25519').privateKey.export({ format: 'jwk' });
    await assert.rejects(
      parsePrivateJwk(x25519, 'alice.jwk'),
      keyFileError('alice.jwk: not an Ed25519 JWK (expected "kty": "OKP" and "crv": "Ed25519", got "kty": "OKP", "crv": "X25519")'),
    );
  });

  it('rejects an "x" of the wrong length', async () => {
    const jwk = { ...privateJwkOf(identity), x: Buffer.alloc(31).toString('base64url') };
    await assert.rejects(parsePrivateJwk(jwk, 'alice.jwk'), keyFileError('alice.jwk: "x" must be 32 bytes of base64url'));
  });

  it('rejects a public key where a private key is needed', async () => {
    await assert.rejects(
      parsePrivateJwk(identity.publicJwk, 'alice.jwk'),
      keyFileError('alice.jwk: is a public key; a private key ("d") is needed here'),
    );
  });

  it('rejects a "d" that is not 32 bytes of base64url', async () => {
    const jwk = { ...privateJwkOf(identity), d: 'not base64url!' };
    await assert.rejects(parsePrivateJwk(jwk, 'alice.jwk'), keyFileError('alice.jwk: "d" must be 32 bytes of base64url'));
  });

  it('rejects a file whose "x" is not the public key of its "d"', async () => {
    const other = await generateIdentity();
    const jwk = { ...privateJwkOf(identity), x: other.publicJwk.x };
    await assert.rejects(parsePrivateJwk(jwk, 'alice.jwk'), keyFileError(/^alice\.jwk: "x" is not the public key of "d"/));
  });
});

describe('parsePublicJwk', () => {
  it('accepts a public JWK', async () => {
    const identity = await generateIdentity();
    const parsed = await parsePublicJwk(JSON.stringify(identity.publicJwk), 'alice.jwk.pub');
    assert.equal(parsed.thumbprint, identity.thumbprint);
    assert.ok(parsed.publicKey.equals(identity.publicKey));
  });

  it('accepts a private JWK and uses only its public half', async () => {
    const identity = await generateIdentity();
    const parsed = await parsePublicJwk(privateJwkOf(identity), 'alice.jwk');
    assert.equal(parsed.thumbprint, identity.thumbprint);
    assert.deepEqual(parsed.publicJwk, identity.publicJwk);
    assert.equal(parsed.publicKey.type, 'public');
  });

  it('rejects a JWK without "x"', async () => {
    await assert.rejects(parsePublicJwk({ kty: 'OKP', crv: 'Ed25519' }, 'bob.pub'), keyFileError('bob.pub: has no "x" (the public key)'));
  });

  it('rejects a JWK whose crv is missing', async () => {
    await assert.rejects(
      parsePublicJwk({ kty: 'OKP', x: 'AAAA' }, 'bob.pub'),
      keyFileError('bob.pub: not an Ed25519 JWK (expected "kty": "OKP" and "crv": "Ed25519", got "kty": "OKP", no "crv")'),
    );
  });

  it('rejects a small-order point as "x": OpenSSL would accept forged signatures under it', async () => {
    const identityPoint = Buffer.alloc(32);
    identityPoint[0] = 1;
    await assert.rejects(
      parsePublicJwk({ kty: 'OKP', crv: 'Ed25519', x: identityPoint.toString('base64url') }, 'bob.pub'),
      keyFileError('bob.pub: "x" is a small-order point, under which forged signatures verify; not a usable public key'),
    );
  });
});

describe('key files', () => {
  let dir: string;
  let identity: Identity;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reflector-keys-'));
    identity = await generateIdentity();
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writeIdentityFiles writes a 0600 private JWK and a 0644 public JWK, pretty-printed with a final newline', async () => {
    const path = join(dir, 'alice.jwk');
    await writeIdentityFiles(path, identity);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    assert.equal((await stat(`${path}.pub`)).mode & 0o777, 0o644);
    const privateText = await readFile(path, 'utf8');
    assert.equal(privateText, `${JSON.stringify(privateJwkOf(identity), null, 2)}\n`);
    assert.equal(await readFile(`${path}.pub`, 'utf8'), `${JSON.stringify(identity.publicJwk, null, 2)}\n`);
    assert.equal((await loadPrivateKeyFile(path)).thumbprint, identity.thumbprint);
    assert.equal((await loadPublicKeyFile(`${path}.pub`)).thumbprint, identity.thumbprint);
  });

  it('writeIdentityFiles refuses to overwrite an existing key', async () => {
    const path = join(dir, 'existing.jwk');
    await writeFile(path, 'precious');
    await assert.rejects(writeIdentityFiles(path, identity), keyFileError(`${path}: already exists; refusing to overwrite it`));
    assert.equal(await readFile(path, 'utf8'), 'precious');
  });

  it('writeIdentityFiles with overwrite replaces the file and tightens its mode to 0600', async () => {
    const path = join(dir, 'loose.jwk');
    await writeFile(path, 'old', { mode: 0o666 });
    await chmod(path, 0o666);
    await writeIdentityFiles(path, identity, { overwrite: true });
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    assert.equal((await loadPrivateKeyFile(path)).thumbprint, identity.thumbprint);
  });

  it('loadPrivateKeyFile refuses a key that group or others can read, as ssh does', { skip: process.platform === 'win32' }, async () => {
    const path = join(dir, 'open.jwk');
    await writeIdentityFiles(path, identity);
    await chmod(path, 0o644);
    await assert.rejects(
      loadPrivateKeyFile(path),
      keyFileError(`${path}: permissions 0644 are too open; a private key must be readable by its owner only (chmod 600 ${path})`),
    );
    await chmod(path, 0o640);
    await assert.rejects(loadPrivateKeyFile(path), keyFileError(/permissions 0640 are too open/));
    await chmod(path, 0o400);
    assert.equal((await loadPrivateKeyFile(path)).thumbprint, identity.thumbprint);
  });

  it('loadPublicKeyFile does not check permissions', async () => {
    const path = join(dir, 'world.pub');
    await writeFile(path, JSON.stringify(identity.publicJwk), { mode: 0o666 });
    await chmod(path, 0o666);
    assert.equal((await loadPublicKeyFile(path)).thumbprint, identity.thumbprint);
  });

  it('reports a missing file in one sentence', async () => {
    const path = join(dir, 'missing.jwk');
    await assert.rejects(loadPrivateKeyFile(path), keyFileError(`${path}: no such file`));
    await assert.rejects(loadPublicKeyFile(path), keyFileError(`${path}: no such file`));
  });

  it('reports a file that is not a JWK with the file name', async () => {
    const path = join(dir, 'pem.jwk');
    await writeFile(path, '-----BEGIN PRIVATE KEY-----\n', { mode: 0o600 });
    await assert.rejects(loadPrivateKeyFile(path), keyFileError(`${path}: not valid JSON`));
  });

  it('reports a directory given as a key file', async () => {
    await assert.rejects(loadPublicKeyFile(dir), keyFileError(/is a directory/));
  });

  it('round-trips the key bytes: the file holds the RFC 8037 "d" of the identity', async () => {
    const path = join(dir, 'roundtrip.jwk');
    await writeIdentityFiles(path, identity);
    const jwk = JSON.parse(await readFile(path, 'utf8')) as { d: string };
    const der = identity.privateKey.export({ format: 'der', type: 'pkcs8' });
    // PKCS#8 Ed25519: the last 32 bytes are the seed, which is the JWK's "d".
    assert.equal(jwk.d, der.subarray(der.length - 32).toString('base64url'));
  });
});
