/**
 * Hostile input never escapes the handshake's error types: whatever a peer
 * sends, parseHello throws ProtocolError, finishServerHandshake rejects with
 * ProtocolError or AuthError, verifyWelcome throws IdentityError — or the
 * input is (still) valid and the result satisfies the protocol's invariants.
 */
import assert from 'node:assert/strict';
import { randomBytes, sign } from 'node:crypto';
import { before, describe, it } from 'node:test';
import fc from 'fast-check';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { AUTH_JWT_TYPE, MIN_RECORD_BYTES, MIN_REKEY_BYTES, PROTOCOL_MAX_RECORD_BYTES, SERVICE_NAME_PATTERN } from '../../shared/constants.js';
import { AuthError, IdentityError, ProtocolError, ReflectorError } from '../../shared/errors.js';
import {
  buildWelcome,
  finishServerHandshake,
  parseHello,
  respondToHello,
  startServerHandshake,
  verifyWelcome,
  type Hello,
  type HandshakeEntropy,
  type KemKeyPair,
  type WelcomeBody,
} from '../../shared/handshake.js';
import type { SessionKeys } from '../../shared/key-schedule.js';
import { generateIdentity, type Identity } from '../../shared/keys.js';

const RUNS = 10_000;

// ---------------------------------------------------------------------------
// Mutators

type Edit = { kind: 'delete' | 'insert' | 'replace' | 'duplicate'; at: number; text: string; length: number };

/** Characters that matter to JSON, base64url and JWS, plus arbitrary ones. */
const interesting = fc.oneof(
  fc.constantFrom('"', '\\', '{', '}', '[', ']', ',', ':', '.', '=', '-', '_', '+', '/', '0', '1', 'A', 'a', ' ', '\u0000', 'é', '\uFFFF', '\uD800'),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 4 }),
);

const edit: fc.Arbitrary<Edit> = fc.record({
  kind: fc.constantFrom('delete', 'insert', 'replace', 'duplicate'),
  at: fc.nat(),
  text: interesting,
  length: fc.integer({ min: 1, max: 8 }),
});

function applyEdits(text: string, edits: Edit[]): string {
  let out = text;
  for (const e of edits) {
    const at = e.at % (out.length + 1);
    if (e.kind === 'delete') out = out.slice(0, at) + out.slice(at + e.length);
    else if (e.kind === 'insert') out = out.slice(0, at) + e.text + out.slice(at);
    else if (e.kind === 'replace') out = out.slice(0, at) + e.text + out.slice(at + e.text.length);
    else out = out.slice(0, at) + out.slice(at, at + e.length) + out.slice(at);
  }
  return out;
}

const textMutation = (base: string): fc.Arbitrary<string> => fc.array(edit, { minLength: 1, maxLength: 4 }).map((edits) => applyEdits(base, edits));

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonEdit = { op: 'set' | 'delete' | 'add'; pick: number; key: string; value: Json };

const jsonEdit: fc.Arbitrary<JsonEdit> = fc.record({
  op: fc.constantFrom('set', 'delete', 'add'),
  pick: fc.nat(),
  key: fc.oneof(fc.constantFrom('type', 'version', 'd', 'kid', 'alg', 'jwk', 'crit', 'b64', '__proto__', 'constructor'), fc.string({ maxLength: 6 })),
  value: fc.oneof(
    fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json>,
    fc.constantFrom<Json>(0, -1, 1.5, 2 ** 31, 2 ** 53, 1e308, '', 'AAAA', 'none', 'EdDSA', AUTH_JWT_TYPE, [], {}),
    fc.uint8Array({ maxLength: 1200 }).map((b) => Buffer.from(b).toString('base64url')),
  ),
});

/** Applies one structural edit to a deep copy of `base` at a node chosen by `pick`. */
function applyJsonEdit(base: Json, e: JsonEdit): Json {
  const root = structuredClone(base);
  const containers: { [key: string]: Json }[] = [];
  const visit = (node: Json): void => {
    if (node !== null && typeof node === 'object' && !Array.isArray(node)) {
      containers.push(node);
      Object.values(node).forEach(visit);
    }
  };
  visit(root);
  const target = containers[e.pick % containers.length];
  if (target === undefined) return root;
  const keys = Object.keys(target);
  const existing = keys[e.pick % Math.max(1, keys.length)];
  if (e.op === 'add' || existing === undefined) Object.defineProperty(target, e.key, { value: e.value, enumerable: true, writable: true, configurable: true });
  else if (e.op === 'delete') delete target[existing];
  else target[existing] = e.value;
  return root;
}

const jsonMutation = (base: Json): fc.Arbitrary<Json> =>
  fc.array(jsonEdit, { minLength: 1, maxLength: 3 }).map((edits) => edits.reduce(applyJsonEdit, base));

/** Rethrows anything that is not one of `kinds`, so fast-check reports it. */
function onlyErrors(error: unknown, ...kinds: (abstract new (...args: never[]) => ReflectorError)[]): true {
  if (!kinds.some((kind) => error instanceof kind)) throw error;
  const closeCode = (error as ReflectorError).closeCode;
  assert.ok(closeCode >= 4000 && closeCode <= 4999, `close code ${closeCode}`);
  return true;
}

// ---------------------------------------------------------------------------
// Fixtures

let host: Identity;
let client: Identity;
let mallory: Identity;
let kem: KemKeyPair;
let entropy: HandshakeEntropy;
let helloText: string;
let hello: Hello;
let authText: string;
let clientKeys: SessionKeys;
let nowMs: number;
let welcome: Buffer;

const lookup = (thumbprint: string) => (thumbprint === client.thumbprint ? client.publicKey : undefined);

before(async () => {
  [host, client, mallory] = await Promise.all([generateIdentity(), generateIdentity(), generateIdentity()]);
  kem = ml_kem768.keygen();
  // The same challenge and ephemeral key for every run: each run gets a fresh
  // (single-use) handshake that the captured auth is valid for.
  entropy = { challenge: Buffer.alloc(32, 0x5a), x25519SecretKey: randomBytes(32) };
  helloText = startServerHandshake(host, kem, entropy).helloText;
  hello = await parseHello(helloText);
  nowMs = Date.now();
  ({ authText, keys: clientKeys } = await respondToHello(hello, helloText, client, nowMs));
  const { keys } = await finishServerHandshake(startServerHandshake(host, kem, entropy), authText, lookup, nowMs);
  welcome = buildWelcome(host, keys, {
    window: 262_144,
    maxStreams: 1024,
    maxRecord: 131_072,
    rekeyBytes: 2 ** 30,
    pingInterval: 25_000,
    resume: 60_000,
    services: ['smtp', 'pop3'],
    replica: 'gw-1',
  });
});

function assertHelloInvariants(parsed: Hello): void {
  assert.equal(parsed.version, 1);
  assert.equal(Buffer.from(parsed.challenge, 'base64url').length, 32);
  assert.equal(parsed.x25519.length, 32);
  assert.equal(parsed.mlkem.length, 1184);
  assert.equal(parsed.hostKey.thumbprint.length, 43);
}

function assertWelcomeInvariants(body: WelcomeBody): void {
  assert.ok(Number.isInteger(body.window) && body.window >= 1024 && body.window <= 2 ** 30);
  assert.ok(Number.isInteger(body.maxStreams) && body.maxStreams >= 1 && body.maxStreams <= 2 ** 31);
  assert.ok(body.maxRecord >= MIN_RECORD_BYTES && body.maxRecord <= PROTOCOL_MAX_RECORD_BYTES);
  assert.ok(body.rekeyBytes >= MIN_REKEY_BYTES);
  assert.ok(body.services.every((s) => SERVICE_NAME_PATTERN.test(s)));
}

/** Runs one hostile auth against a fresh handshake; success must be a genuine client session. */
async function finishHostile(text: string): Promise<boolean> {
  const hs = startServerHandshake(host, kem, entropy);
  try {
    const result = await finishServerHandshake(hs, text, lookup, nowMs);
    assert.equal(result.clientThumbprint, client.thumbprint);
    assert.equal(result.keys.c2s.length, 32);
    if (text === authText) assert.deepEqual(result.keys, clientKeys);
    return true;
  } catch (error) {
    return onlyErrors(error, AuthError, ProtocolError);
  }
}

const b64uJson = (value: unknown): string => Buffer.from(JSON.stringify(value) ?? 'null').toString('base64url');

/** A compact JWS over any header and claims, signed with Ed25519 whatever the header says. */
function signRaw(header: Json, claims: Json, signer: Identity): string {
  const input = `${b64uJson(header)}.${b64uJson(claims)}`;
  return `${input}.${sign(null, Buffer.from(input), signer.privateKey).toString('base64url')}`;
}

// ---------------------------------------------------------------------------

describe('parseHello against hostile input', () => {
  it('returns a valid Hello or throws ProtocolError for arbitrary text', async () => {
    const anyText = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 300 }),
      fc.json({ maxDepth: 3 }),
      fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify({ type: 'hello', version: 1, challenge: v })),
    );
    await fc.assert(
      fc.asyncProperty(anyText, async (text) => {
        try {
          assertHelloInvariants(await parseHello(text));
          return true;
        } catch (error) {
          return onlyErrors(error, ProtocolError);
        }
      }),
      { numRuns: RUNS },
    );
  });

  it('returns a valid Hello or throws ProtocolError for mutated hellos', async () => {
    const mutated = fc.oneof(textMutation(helloText), jsonMutation(JSON.parse(helloText) as Json).map((v) => JSON.stringify(v)));
    await fc.assert(
      fc.asyncProperty(mutated, async (text) => {
        try {
          assertHelloInvariants(await parseHello(text));
          return true;
        } catch (error) {
          return onlyErrors(error, ProtocolError);
        }
      }),
      { numRuns: RUNS },
    );
  });
});

describe('finishServerHandshake against hostile input', () => {
  it('rejects arbitrary text with AuthError or ProtocolError only', async () => {
    const segment = fc.string({ unit: fc.constantFrom(...'ABCabc012-_'.split('')), maxLength: 40 });
    const anyText = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 300 }),
      fc.json({ maxDepth: 3 }),
      fc.tuple(segment, segment, segment).map((parts) => JSON.stringify({ type: 'auth', token: parts.join('.') })),
      fc.tuple(fc.jsonValue({ maxDepth: 2 }), fc.jsonValue({ maxDepth: 2 })).map(([h, c]) =>
        JSON.stringify({ type: 'auth', token: `${b64uJson(h)}.${b64uJson(c)}.${'A'.repeat(86)}` }),
      ),
    );
    await fc.assert(
      fc.asyncProperty(anyText, async (text) => {
        const hs = startServerHandshake(host, kem, entropy);
        await assert.rejects(finishServerHandshake(hs, text, lookup, nowMs), (e: unknown) => onlyErrors(e, AuthError, ProtocolError));
      }),
      { numRuns: RUNS },
    );
  });

  it('rejects mutated auth texts with AuthError or ProtocolError only, unless still valid', async () => {
    await fc.assert(fc.asyncProperty(textMutation(authText), finishHostile), { numRuns: RUNS });
  });

  it('rejects re-signed tokens with mutated headers or claims with AuthError or ProtocolError only, unless still valid', async () => {
    const token = (JSON.parse(authText) as { token: string }).token;
    const [headerPart, claimsPart] = token.split('.') as [string, string];
    const header = JSON.parse(Buffer.from(headerPart, 'base64url').toString()) as Json;
    const claims = JSON.parse(Buffer.from(claimsPart, 'base64url').toString()) as Json;
    const hostile = fc
      .tuple(
        fc.oneof({ weight: 1, arbitrary: jsonMutation(header) }, { weight: 3, arbitrary: fc.constant(header) }),
        fc.oneof({ weight: 3, arbitrary: jsonMutation(claims) }, { weight: 1, arbitrary: fc.constant(claims) }),
        fc.oneof({ weight: 9, arbitrary: fc.constant('client') }, { weight: 1, arbitrary: fc.constant('mallory') }),
      )
      .map(([h, c, who]) => JSON.stringify({ type: 'auth', token: signRaw(h, c, who === 'client' ? client : mallory) }));
    await fc.assert(fc.asyncProperty(hostile, finishHostile), { numRuns: RUNS });
  });
});

describe('verifyWelcome against hostile input', () => {
  it('returns an in-range body or throws IdentityError for mutated payloads', () => {
    const text = welcome.toString('utf8');
    const mutated = fc.oneof(
      textMutation(text).map((t) => Buffer.from(t, 'utf8')),
      jsonMutation(JSON.parse(text) as Json).map((v) => Buffer.from(JSON.stringify(v), 'utf8')),
      fc.uint8Array({ maxLength: 400 }).map((b) => Buffer.from(b)),
    );
    fc.assert(
      fc.property(mutated, (payload) => {
        try {
          assertWelcomeInvariants(verifyWelcome(payload, hello, clientKeys));
          return true;
        } catch (error) {
          return onlyErrors(error, IdentityError);
        }
      }),
      { numRuns: RUNS },
    );
  });
});
