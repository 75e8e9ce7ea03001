/**
 * What `npm run fuzz` feeds, and what each parser promises in return.
 *
 * A target builds one input from a seeded Rng (mostly mutations of valid
 * inputs, some pure noise), runs the parser, and may check an invariant on
 * success. A crash is anything thrown that is not the typed error the parser
 * promises; an invariant violation is a success that must not happen (a
 * forged record that opens, an auth that passes with another connection's
 * nonce, a decode that does not re-encode to its input).
 */
import { createHash, randomBytes, sign } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { aeadBackend } from '../../shared/aead.js';
import { FRAME_HEADER_BYTES, FrameType } from '../../shared/constants.js';
import { parseClientInput, resolveClientOptions } from '../../shared/client-config.js';
import { loadServerConfig, parseServerConfig } from '../../shared/config-schema.js';
import { parseProxyUrl } from '../../shared/proxy-config.js';
import { parseForwardSpec } from '../../shared/forward-spec.js';
import { AuthError, ConfigError, IdentityError, ProtocolError, StreamError } from '../../shared/errors.js';
import { decodeFrames, encodeFrames, type Frame } from '../../shared/frames.js';
import { buildWelcome, finishServerHandshake, parseHello, respondToHello, startServerHandshake, verifyWelcome, type Hello } from '../../shared/handshake.js';
import { generateIdentity, parsePrivateJwk, parsePublicJwk, privateJwkOf, type Identity } from '../../shared/keys.js';
import { RecordOpener, RecordSealer } from '../../shared/record-layer.js';
import { StreamMux } from '../../shared/stream-mux.js';
import type { TunnelStream } from '../../shared/tunnel-stream.js';
import { verifyKnownServer } from '../../client/known-servers.js';
import { createType3Message, NtlmMessageError, parseType2Message } from '../../client/ntlm.js';
import { mutateBytes, mutateJson, mutateText, randomText, randomValue, type Rng } from './mutate.js';

/** A success that must not happen. Counted apart from crashes, and fails the run too. */
export class InvariantViolation extends Error {}

export interface PreparedTarget {
  /** Builds input number `index` from its own Rng. */
  input(rng: Rng): unknown;
  /** Runs the parser; throws what it throws. */
  run(input: unknown): void | Promise<void>;
}

export interface FuzzTarget {
  name: string;
  /** Inputs per run at scale 1. */
  count: number;
  /** The typed errors this parser promises; anything else thrown is a crash. */
  allowed(error: unknown): boolean;
  prepare(): Promise<PreparedTarget>;
}

const is = (...types: Array<abstract new (...args: never[]) => Error>) => (error: unknown) =>
  types.some((type) => error instanceof type);

// ---------------------------------------------------------------------------
// Frames as bytes (built by hand, so they cover what the encoder refuses)

const FRAME_CODES = Object.values(FrameType) as number[];

function frameBytes(type: number, streamId: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(FRAME_HEADER_BYTES);
  header[0] = type;
  header.writeUInt32BE(streamId >>> 0, 1);
  header.writeUInt32BE(payload.length, 5);
  return Buffer.concat([header, payload]);
}

/** A plausible payload for `type`: the right size most of the time. */
function payloadFor(rng: Rng, type: number): Buffer {
  switch (type) {
    case FrameType.OPEN:
      return Buffer.from(rng.pick(['echo', 'smtp', 'a', 'x'.repeat(63), 'pop3.internal', 'nntp_1', 'echo-2']), 'latin1');
    case FrameType.OPEN_FAIL:
    case FrameType.RST:
    case FrameType.GOAWAY: {
      const code = Buffer.alloc(2);
      code.writeUInt16BE(rng.range(0, 6));
      return type === FrameType.OPEN_FAIL ? Buffer.concat([code, Buffer.from(randomText(rng, 20))]) : code;
    }
    case FrameType.WINDOW: {
      const offset = Buffer.alloc(8);
      offset.writeBigUInt64BE(BigInt(rng.pick([0, 1, 256, 1024, 4096, rng.int(5000)])));
      return offset;
    }
    case FrameType.DATA:
      return rng.bytes(rng.range(1, 600));
    case FrameType.PING:
    case FrameType.PONG:
      return rng.bytes(8);
    case FrameType.WELCOME:
      return Buffer.from(JSON.stringify(randomValue(rng)) ?? '{}');
    default:
      // RESUME and its answers, and anything a later version adds: a header-sized block plus entries.
      return rng.bytes(rng.pick([0, 2, 16, 50, 51, 64, 16 + 32 + 4 + 13, 16 + 32 + 4 + 26, 4 + 13]));
  }
}

/** One to six frames, concatenated: a record plaintext. */
function recordPlaintext(rng: Rng, streamIds: () => number): Buffer {
  const frames: Buffer[] = [];
  for (let i = rng.range(1, 6); i > 0; i--) {
    const type = rng.chance(0.95) ? rng.pick(FRAME_CODES) : rng.int(256);
    const sessionFrame = [FrameType.WELCOME, FrameType.PING, FrameType.PONG, FrameType.GOAWAY].includes(type as never) || type >= 0x0c;
    frames.push(frameBytes(type, sessionFrame && rng.chance(0.9) ? 0 : streamIds(), payloadFor(rng, type)));
  }
  return Buffer.concat(frames);
}

/** Frames whose text members may not survive a round trip (invalid UTF-8 in a reason becomes U+FFFD). */
const LOSSY = new Set<Frame['type']>(['OPEN_FAIL', 'RESUME_FAIL'] as Array<Frame['type']>);

const framesDecode: FuzzTarget = {
  name: 'frames.decode',
  count: 300_000,
  allowed: is(ProtocolError),
  async prepare() {
    return {
      input: (rng) => {
        if (rng.chance(0.05)) return rng.bytes(rng.int(64));
        const record = recordPlaintext(rng, () => rng.pick([1, 2, 3, 0xffffffff, rng.int(100)]));
        return rng.chance(0.8) ? mutateBytes(rng, record) : record;
      },
      run: (input) => {
        const bytes = input as Buffer;
        const frames = decodeFrames(bytes);
        if (frames.some((f) => LOSSY.has(f.type))) return;
        const again = encodeFrames(frames);
        if (!again.equals(bytes)) throw new InvariantViolation(`decoded frames re-encode to ${again.length} other bytes`);
      },
    };
  },
};

// ---------------------------------------------------------------------------
// Record layer

const recordOpen: FuzzTarget = {
  name: 'record.open',
  count: 150_000,
  allowed: is(ProtocolError),
  async prepare() {
    const key = Buffer.alloc(32, 7);
    const backends = [aeadBackend('node'), aeadBackend('noble')];
    const genuine = [0, 1, 17, 200, 300].map((n) => new RecordSealer(backends[0]!, key, 2 ** 40).seal(Buffer.alloc(n, 0x61)));
    return {
      input: (rng) => {
        const record = rng.pick(genuine);
        return { backend: rng.int(2), record: rng.chance(0.03) ? record : mutateBytes(rng, record, 3) };
      },
      run: (input) => {
        const { backend, record } = input as { backend: number; record: Buffer };
        // maxRecord 256 so that too-large records are part of the mix.
        const opener = new RecordOpener(backends[backend]!, key, 2 ** 40, 256);
        opener.open(record);
        if (!genuine.some((g) => g.equals(record))) throw new InvariantViolation('a modified record opened (forgery)');
      },
    };
  },
};

// ---------------------------------------------------------------------------
// The stream table, driven like a hostile peer would drive it

type MuxEvent = { kind: 'record'; bytes: Buffer } | { kind: 'write' | 'end' | 'reset' | 'open'; pick: number; size: number } | { kind: 'reconcile'; entries: Array<{ streamId: number; received: number; flags: number }> };

function muxTarget(role: 'client' | 'server'): FuzzTarget {
  return {
    name: `stream-mux.${role}`,
    count: 75_000,
    allowed: is(ProtocolError),
    async prepare() {
      return {
        input: (rng) => {
          const events: MuxEvent[] = [];
          for (let i = rng.range(1, 14); i > 0; i--) {
            const roll = rng.int(20);
            if (roll < 11) {
              const plaintext = recordPlaintext(rng, () => rng.range(0, 6));
              events.push({ kind: 'record', bytes: rng.chance(0.2) ? mutateBytes(rng, plaintext, 2) : plaintext });
            } else if (roll < 18) {
              events.push({ kind: rng.pick(['write', 'write', 'end', 'reset', 'open'] as const), pick: rng.int(8), size: rng.pick([1, 100, 1024, 5000]) });
            } else {
              const entries = Array.from({ length: rng.int(4) }, () => ({ streamId: rng.range(1, 7), received: rng.pick([0, 1, 100, 1024, 2048, 2 ** 53 - 1]), flags: rng.int(4) }));
              events.push({ kind: 'reconcile', entries });
            }
          }
          return { resumable: rng.chance(0.5), acceptEvery: rng.range(1, 3), events };
        },
        run: (input) => {
          const { resumable, acceptEvery, events } = input as { resumable: boolean; acceptEvery: number; events: MuxEvent[] };
          const streams: TunnelStream[] = [];
          let opened = 0;
          const adopt = (stream: TunnelStream): void => {
            streams.push(stream);
            stream.on('error', () => undefined);
            stream.on('reset', () => undefined);
            // The application takes every byte at once, as a fast socket would.
            stream.on('data', (data: Buffer) => stream.consumed(data.length));
          };
          const mux = new StreamMux({
            role,
            windowBytes: 1024,
            maxRecordBytes: 4096,
            maxStreams: 4,
            resumable,
            sink: { sendRecord: () => undefined, congested: false },
            onOpen: (stream) => {
              adopt(stream);
              opened += 1;
              if (opened % acceptEvery === 0) stream.accept();
              else if (opened % 3 === 0) stream.refuse(1, 'no');
            },
            onSessionFrame: () => undefined,
          });
          try {
            for (const event of events) {
              if (event.kind === 'record') {
                mux.receiveRecord(event.bytes);
              } else if (event.kind === 'reconcile') {
                mux.reconcile(event.entries);
              } else if (event.kind === 'open') {
                if (role === 'client') adopt(mux.openStream('echo'));
                else {
                  const stream = streams[event.pick % Math.max(streams.length, 1)];
                  if (stream?.state === 'opening') stream.accept();
                }
              } else {
                const stream = streams[event.pick % Math.max(streams.length, 1)];
                if (stream === undefined) continue;
                if (event.kind === 'reset') stream.reset();
                else if (event.kind === 'end') stream.end();
                else if (stream.state !== 'closed' && stream.state !== 'half-closed-local') {
                  try {
                    stream.write(Buffer.alloc(event.size, 0x62));
                  } catch (error) {
                    // write() after end() is the caller's mistake, reported as a StreamError: not a parser crash.
                    if (!(error instanceof StreamError)) throw error;
                  }
                }
              }
              mux.flush();
            }
          } finally {
            mux.destroy('fuzz input done');
          }
        },
      };
    },
  };
}

// ---------------------------------------------------------------------------
// Handshake messages

interface HandshakeFixture {
  host: Identity;
  client: Identity;
  kem: { publicKey: Uint8Array; secretKey: Uint8Array };
  entropy: { challenge: Uint8Array; x25519SecretKey: Uint8Array };
  helloText: string;
  hello: Hello;
  authText: string;
  nowMs: number;
}

async function handshakeFixture(): Promise<HandshakeFixture> {
  const [host, client] = await Promise.all([generateIdentity(), generateIdentity()]);
  const kem = ml_kem768.keygen();
  const entropy = { challenge: Buffer.alloc(32, 3), x25519SecretKey: randomBytes(32) };
  const helloText = startServerHandshake(host, kem, entropy).helloText;
  const hello = await parseHello(helloText);
  const nowMs = Date.now();
  const { authText } = await respondToHello(hello, helloText, client, nowMs);
  return { host, client, kem, entropy, helloText, hello, authText, nowMs };
}

/** Half the time text edits, half the time structure edits (re-serialized). */
function mutateJsonText(rng: Rng, text: string): string {
  if (rng.chance(0.5)) return mutateText(rng, text);
  return JSON.stringify(mutateJson(rng, JSON.parse(text))) ?? 'null';
}

const helloParse: FuzzTarget = {
  name: 'handshake.hello',
  count: 100_000,
  allowed: is(ProtocolError),
  async prepare() {
    const { helloText } = await handshakeFixture();
    return {
      input: (rng) => (rng.chance(0.03) ? randomText(rng, 200) : mutateJsonText(rng, helloText)),
      run: async (input) => {
        const hello = await parseHello(input as string);
        if (hello.x25519.length !== 32 || hello.mlkem.length !== 1184 || hello.hostKey.thumbprint.length !== 43) {
          throw new InvariantViolation('parseHello accepted key shares of the wrong size');
        }
      },
    };
  },
};

const b64uJson = (value: unknown): string => Buffer.from(JSON.stringify(value) ?? 'null').toString('base64url');

const authVerify: FuzzTarget = {
  name: 'handshake.auth',
  count: 60_000,
  allowed: is(ProtocolError, AuthError),
  async prepare() {
    const f = await handshakeFixture();
    const token = (JSON.parse(f.authText) as { token: string }).token;
    const [head, body] = token.split('.') as [string, string, string];
    const header = JSON.parse(Buffer.from(head, 'base64url').toString()) as Record<string, unknown>;
    const claims = JSON.parse(Buffer.from(body, 'base64url').toString()) as Record<string, unknown>;
    const expected = { nonce: claims.nonce, th: claims.th, aud: claims.aud };
    const resign = (h: unknown, c: unknown): string => {
      const input = `${b64uJson(h)}.${b64uJson(c)}`;
      return `${input}.${sign(null, Buffer.from(input), f.client.privateKey).toString('base64url')}`;
    };
    return {
      input: (rng) => {
        switch (rng.int(4)) {
          case 0:
            return mutateJsonText(rng, f.authText);
          case 1:
            // Claims changed and signed again with the real key: the checks after the signature get exercised.
            return JSON.stringify({ type: 'auth', token: resign(header, mutateJson(rng, claims)) });
          case 2:
            return JSON.stringify({ type: 'auth', token: resign(mutateJson(rng, header), claims) });
          default:
            return JSON.stringify({ type: 'auth', token: mutateText(rng, token) });
        }
      },
      run: async (input) => {
        const hs = startServerHandshake(f.host, f.kem, f.entropy);
        const lookup = (kid: string) => (kid === f.client.thumbprint ? f.client.publicKey : undefined);
        await finishServerHandshake(hs, input as string, lookup, f.nowMs);
        // It passed: then it must be this connection's nonce, this hello and this server.
        const passed = JSON.parse(Buffer.from((JSON.parse(input as string) as { token: string }).token.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
        for (const [claim, value] of Object.entries(expected)) {
          if (passed[claim] !== value) throw new InvariantViolation(`auth accepted with ${claim} ${JSON.stringify(passed[claim])}`);
        }
      },
    };
  },
};

const welcomeVerify: FuzzTarget = {
  name: 'handshake.welcome',
  count: 100_000,
  allowed: is(IdentityError),
  async prepare() {
    const f = await handshakeFixture();
    const hs = startServerHandshake(f.host, f.kem, f.entropy);
    const { keys: serverKeys } = await finishServerHandshake(hs, f.authText, () => f.client.publicKey, f.nowMs);
    // The limits a default server sends; `resume` only where this version's WELCOME has it.
    const body: Record<string, unknown> = {
      window: 262_144,
      maxStreams: 1024,
      maxRecord: 131_072,
      rekeyBytes: 2 ** 30,
      pingInterval: 25_000,
      services: ['echo', 'smtp'],
      resume: 60_000,
    };
    let payload: Buffer;
    try {
      payload = buildWelcome(f.host, serverKeys, body as never);
    } catch {
      delete body.resume;
      payload = buildWelcome(f.host, serverKeys, body as never);
    }
    const genuine = JSON.parse(payload.toString()) as { sig: string; sessionId: string };
    return {
      input: (rng) => {
        const roll = rng.int(3);
        if (roll === 0) return mutateBytes(rng, payload, 3);
        return Buffer.from(mutateJsonText(rng, payload.toString()));
      },
      run: (input) => {
        verifyWelcome(input as Buffer, f.hello, serverKeys);
        const accepted = JSON.parse((input as Buffer).toString()) as { sig: string; sessionId: string };
        if (accepted.sig !== genuine.sig || accepted.sessionId !== genuine.sessionId) {
          throw new InvariantViolation('a WELCOME with another signature or session id verified');
        }
      },
    };
  },
};

// ---------------------------------------------------------------------------
// Config and key files

async function configFixture(): Promise<{ raw: Record<string, unknown>; yaml: string; dir: string; client: Identity }> {
  const client = await generateIdentity();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'reflector-fuzz-'));
  writeFileSync(path.join(dir, 'alice.jwk.pub'), JSON.stringify(client.publicJwk));
  const raw = {
    listen: { host: '127.0.0.1', port: 8080 },
    path: '/tunnel',
    hostKey: 'host.jwk',
    trustProxy: 'loopback',
    services: { smtp: '127.0.0.1:25', pop3: { host: 'mail.internal', port: 110 }, nntp: '[::1]:119' },
    clients: [
      { name: 'alice', keyFile: 'alice.jwk.pub', services: ['smtp', 'pop3'] },
      { name: 'bob', key: (await generateIdentity()).publicJwk, services: ['*'] },
    ],
    limits: { windowBytes: 262_144, maxStreamsPerSession: 64, pingIntervalMs: 25_000, idleTimeoutMs: 75_000 },
    log: { level: 'info', format: 'json' },
  };
  const yaml = [
    'listen: { host: 127.0.0.1, port: 8080 }',
    'path: /tunnel',
    'hostKey: host.jwk',
    'services:',
    '  smtp: 127.0.0.1:25',
    '  pop3: { host: mail.internal, port: 110 }',
    '  nntp: "[::1]:119"',
    'clients:',
    '  - name: alice',
    '    keyFile: alice.jwk.pub',
    '    services: [smtp, pop3]',
    '  - &bob { name: bob, key: { kty: OKP, crv: Ed25519, x: ' + client.publicJwk.x + ' }, services: ["*"] }',
    'limits:',
    '  windowBytes: 262144',
    '  maxStreamsPerSession: 64',
    'log: { level: info, format: json }',
    '',
  ].join('\n');
  return { raw, yaml, dir, client };
}

const configServer: FuzzTarget = {
  name: 'config.server',
  count: 100_000,
  allowed: is(ConfigError),
  async prepare() {
    const { raw, dir } = await configFixture();
    return {
      input: (rng) => (rng.chance(0.05) ? randomValue(rng) : mutateJson(rng, raw, 4)),
      run: async (input) => {
        await parseServerConfig(input, 'server.yaml', dir);
      },
    };
  },
};

/** YAML-specific trouble: aliases, merge keys, tags, deep flow nesting, huge numbers, duplicate keys. */
const YAML_SNIPPETS = [
  '&a [*a]', '*undefined', '<<: *bob', '!!binary aGVsbG8=', '!!str 25', '!!int "25"', '!!js/function "x"', '? [a, b]\n: c',
  '1e400', '0x19', '0o31', '.inf', '.nan', '~', 'null', 'yes', 'on', '2001-01-01', '"\\u0000"', "'\\x00'", '|-\n  a\n  b',
  'a: 1\na: 2', '['.repeat(300), '{a: '.repeat(100), '- '.repeat(200) + 'x', '%YAML 1.1\n---', '--- !!map', '... ',
  'keyFile: /dev/null', 'keyFile: /etc/passwd', 'keyFile: .', 'keyFile: ../../etc/shadow',
];

const configYaml: FuzzTarget = {
  name: 'config.yaml',
  count: 10_000,
  allowed: is(ConfigError),
  async prepare() {
    const { yaml, dir } = await configFixture();
    let n = 0;
    return {
      input: (rng) => {
        // Nesting stays shallow here: the YAML parser reports deep nesting as an error, but slowly (0.1-0.3 s).
        let text = rng.chance(0.7) ? mutateText(rng, yaml, 3, 200) : yaml;
        if (rng.chance(0.5)) {
          const lines = text.split('\n');
          const at = rng.int(lines.length);
          const indent = rng.pick(['', '  ', '    ']);
          lines.splice(at, rng.int(2), `${indent}${rng.pick(['', 'services: ', 'clients: ', 'limits: ', 'x: ', 'keyFile: ', '- '])}${rng.pick(YAML_SNIPPETS)}`);
          text = lines.join('\n');
        }
        return text;
      },
      run: async (input) => {
        const file = path.join(dir, `server-${n++ % 8}.yaml`);
        writeFileSync(file, input as string);
        await loadServerConfig(file);
      },
    };
  },
};

const configForward: FuzzTarget = {
  name: 'config.forward',
  count: 200_000,
  allowed: is(ConfigError),
  async prepare() {
    const seeds = ['2525=smtp', '127.0.0.1:2525=smtp', '[::1]:1110=pop3', '0.0.0.0:119=nntp', 'localhost:8080=status'];
    return {
      input: (rng) => (rng.chance(0.1) ? randomText(rng, 40) : mutateText(rng, rng.pick(seeds))),
      run: (input) => {
        const spec = parseForwardSpec(input as string);
        if (!(spec.port >= 1 && spec.port <= 65535)) throw new InvariantViolation(`-L accepted port ${spec.port}`);
      },
    };
  },
};

const configClient: FuzzTarget = {
  name: 'config.client',
  count: 50_000,
  allowed: is(ConfigError),
  async prepare() {
    const raw = {
      url: 'wss://mail.example.com/tunnel',
      identity: 'alice.jwk',
      serverKey: 'A'.repeat(43),
      forwards: ['2525=smtp', { host: '127.0.0.1', port: 1110, service: 'pop3' }],
      aead: 'node',
      reconnect: { initialDelayMs: 200, maxDelayMs: 30_000, maxAttempts: 0 },
      headers: { 'X-Auth': 'token' },
      log: { level: 'info', format: 'json' },
      proxy: 'http://proxy.corp:3128',
      noProxy: 'localhost,.internal,10.0.0.0/8',
      proxyAuth: { scheme: 'ntlm', user: 'CORP\\alice' },
    };
    const envNames = ['https_proxy', 'HTTPS_PROXY', 'all_proxy', 'NO_PROXY', 'REFLECTOR_PROXY_USER', 'REFLECTOR_PROXY_PASSWORD', 'HOME', 'XDG_CONFIG_HOME'];
    const envValues = ['', 'proxy:3128', 'http://u:p@proxy:8080', 'https://proxy', 'socks5://x', 'http://[::1]:3128', 'http://proxy/path', '%%', 'http://'];
    return {
      input: (rng) => ({
        raw: rng.chance(0.05) ? randomValue(rng) : mutateJson(rng, raw, 4),
        env: Object.fromEntries([
          ...(rng.chance(0.8) ? [['REFLECTOR_PROXY_PASSWORD', 'pw']] : []),
          ...envNames.filter(() => rng.chance(0.3)).map((name) => [name, rng.chance(0.5) ? rng.pick(envValues) : mutateText(rng, rng.pick(envValues))]),
        ]),
      }),
      run: (input) => {
        // The whole path the CLI takes: validate one source, then resolve defaults, the proxy and its credentials.
        const { raw: value, env } = input as { raw: unknown; env: NodeJS.ProcessEnv };
        resolveClientOptions(parseClientInput(value, 'client.yaml', { baseDir: '/home/alice' }), 'client.yaml', env);
      },
    };
  },
};

/** A Type 2 (CHALLENGE) message as a proxy sends it, with a target name and target info (AV pairs). */
function ntlmType2(): Buffer {
  const name = Buffer.from('CORP', 'utf16le');
  const info = Buffer.concat([
    Buffer.from([2, 0, name.length, 0]), name,
    Buffer.from([7, 0, 8, 0]), Buffer.alloc(8, 1),
    Buffer.from([0, 0, 0, 0]),
  ]);
  const header = Buffer.alloc(56);
  Buffer.from('NTLMSSP\0', 'latin1').copy(header, 0);
  header.writeUInt32LE(2, 8);
  header.writeUInt16LE(name.length, 12);
  header.writeUInt16LE(name.length, 14);
  header.writeUInt32LE(56, 16);
  header.writeUInt32LE(0x00000001 | 0x00000200 | 0x00800000 | 0x00080000, 20); // UNICODE, NTLM, TARGET_INFO, EXTENDED_SESSIONSECURITY
  Buffer.alloc(8, 0x42).copy(header, 24);
  header.writeUInt16LE(info.length, 40);
  header.writeUInt16LE(info.length, 42);
  header.writeUInt32LE(56 + name.length, 44);
  return Buffer.concat([header, name, info]);
}

const proxyNtlm: FuzzTarget = {
  name: 'proxy.ntlm-challenge',
  count: 100_000,
  allowed: is(NtlmMessageError),
  async prepare() {
    const genuine = ntlmType2();
    parseType2Message(genuine.toString('base64')); // the seed itself must parse
    const credentials = { user: 'alice', domain: 'CORP', password: 'correct horse' };
    return {
      input: (rng) => {
        const prefix = rng.pick(['', 'NTLM ', 'ntlm  ', 'Negotiate ']);
        if (rng.chance(0.1)) return prefix + mutateText(rng, genuine.toString('base64'));
        return prefix + mutateBytes(rng, genuine).toString('base64');
      },
      run: (input) => {
        // What a proxy's Proxy-Authenticate header can make the client do: parse, then answer.
        const challenge = parseType2Message(input as string);
        createType3Message(challenge, credentials);
      },
    };
  },
};

const proxyUrl: FuzzTarget = {
  name: 'proxy.url',
  count: 100_000,
  // It returns the reason instead of throwing: nothing at all may escape.
  allowed: () => false,
  async prepare() {
    const seeds = ['proxy:3128', 'http://proxy.corp:8080', 'http://alice:s3cret@proxy:3128/', '[::1]:3128', 'https://proxy', 'socks5://x:1080', 'http://proxy/path?q'];
    return {
      input: (rng) => (rng.chance(0.1) ? randomText(rng, 40) : mutateText(rng, rng.pick(seeds))),
      run: (input) => {
        const parsed = parseProxyUrl(input as string);
        if (typeof parsed !== 'string' && parsed.protocol !== 'http:') throw new InvariantViolation(`accepted a ${parsed.protocol} proxy`);
      },
    };
  },
};

const keysJwk: FuzzTarget = {
  name: 'keys.jwk',
  count: 50_000,
  allowed: is(ConfigError),
  async prepare() {
    const identity = await generateIdentity();
    const privateText = JSON.stringify(privateJwkOf(identity));
    return {
      input: (rng) => ({ asPrivate: rng.chance(0.5), text: rng.chance(0.5) ? mutateText(rng, privateText, 3) : JSON.stringify(mutateJson(rng, JSON.parse(privateText))) }),
      run: async (input) => {
        const { asPrivate, text } = input as { asPrivate: boolean; text: string };
        if (asPrivate) await parsePrivateJwk(text, 'alice.jwk');
        else await parsePublicJwk(text, 'alice.jwk.pub');
      },
    };
  },
};

const knownServers: FuzzTarget = {
  name: 'client.known-servers',
  count: 20_000,
  allowed: is(ConfigError, IdentityError),
  async prepare() {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'reflector-fuzz-known-'));
    const thumbprint = createHash('sha256').update('a').digest('base64url');
    const other = createHash('sha256').update('b').digest('base64url');
    const text = `# known servers\nmail.example.com:443 ${thumbprint}\n[2001:db8::1]:8443 ${other}\n\n`;
    let n = 0;
    return {
      input: (rng) => ({ text: mutateText(rng, text, 3), hostPort: rng.pick(['mail.example.com:443', '[2001:db8::1]:8443', 'MAIL.example.com:443', 'x:1']), thumbprint: rng.pick([thumbprint, other]) }),
      run: async (input) => {
        const { text: content, hostPort, thumbprint: presented } = input as { text: string; hostPort: string; thumbprint: string };
        const file = path.join(dir, `known-${n++ % 8}`);
        writeFileSync(file, content);
        await verifyKnownServer(file, hostPort, presented);
      },
    };
  },
};

export const TARGETS: FuzzTarget[] = [
  framesDecode,
  recordOpen,
  muxTarget('server'),
  muxTarget('client'),
  helloParse,
  authVerify,
  welcomeVerify,
  configServer,
  configYaml,
  configForward,
  configClient,
  proxyNtlm,
  proxyUrl,
  keysJwk,
  knownServers,
];
