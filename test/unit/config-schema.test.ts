import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  defaultKnownServers,
  loadClientConfig,
  mergeClientInputs,
  parseClientInput,
  parseHeaderFlag,
  resolveClientOptions,
} from '../../shared/client-config.js';
import { DEFAULT_ADMIN_PORT, MIN_ADMIN_TOKEN_LENGTH, loadServerConfig, parseServerConfig } from '../../shared/config-schema.js';
import { parseForwardSpec } from '../../shared/forward-spec.js';
import { Defaults, DEFAULT_TUNNEL_PATH } from '../../shared/constants.js';
import { ConfigError, ExitCode, exitCodeFor } from '../../shared/errors.js';
import { generateIdentity, writeIdentityFiles, type Identity } from '../../shared/keys.js';

let dir: string;
const alice: Identity = await generateIdentity();
const bob: Identity = await generateIdentity();

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'reflector-config-'));
  await writeIdentityFiles(path.join(dir, 'host.jwk'), await generateIdentity());
  await mkdir(path.join(dir, 'clients'));
  await writeIdentityFiles(path.join(dir, 'clients', 'alice.jwk'), alice);
  await writeFile(path.join(dir, 'not-a-key.json'), '{"hello": "world"}\n');
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

let counter = 0;
/** Writes `text` as a config file in the temp dir and returns its path. */
async function configFile(text: string, name = 'server.yaml'): Promise<string> {
  const sub = path.join(dir, `case-${++counter}`);
  await mkdir(sub);
  const file = path.join(sub, name);
  await writeFile(file, text);
  return file;
}

const validServer = (): string => `
listen: { host: 127.0.0.1, port: 0 }
hostKey: ../host.jwk
services:
  smtp: 127.0.0.1:25
  pop3: { host: 127.0.0.1, port: 110 }
clients:
  - name: alice
    keyFile: ../clients/alice.jwk.pub
    services: [smtp]
  - name: bob
    key: { kty: OKP, crv: Ed25519, x: ${bob.publicJwk.x} }
    services: ["*"]
`;

/** Asserts a one-line ConfigError (exit code 2) whose message contains every fragment. */
async function rejectsWith(action: Promise<unknown> | (() => unknown), ...fragments: string[]): Promise<string> {
  let caught: unknown;
  try {
    await (typeof action === 'function' ? action() : action);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof ConfigError, `expected a ConfigError, got ${String(caught)}`);
  assert.equal(exitCodeFor(caught), ExitCode.USAGE);
  assert.doesNotMatch(caught.message, /\n/, 'the message is one line');
  for (const fragment of fragments) assert.ok(caught.message.includes(fragment), `"${caught.message}" should contain "${fragment}"`);
  return caught.message;
}

describe('loadServerConfig', () => {
  it('reads string and object service targets, keyFile and inline keys, and fills defaults', async () => {
    const file = await configFile(validServer());
    const config = await loadServerConfig(file);
    assert.deepEqual(config.listen, { host: '127.0.0.1', port: 0 });
    assert.equal(config.path, DEFAULT_TUNNEL_PATH);
    assert.equal(config.hostKey, path.join(dir, 'host.jwk'));
    assert.equal(config.configPath, file);
    assert.deepEqual(config.services, { smtp: { host: '127.0.0.1', port: 25 }, pop3: { host: '127.0.0.1', port: 110 } });
    assert.equal(config.trustProxy, false);
    assert.equal(config.aead, 'auto');
    assert.deepEqual(config.limits, { ...Defaults });
    assert.deepEqual(config.log, { level: 'info', format: 'json' });
    assert.equal(config.tls, undefined);
    assert.deepEqual(
      config.clients.map((c) => [c.name, c.publicKey.thumbprint, c.services]),
      [
        ['alice', alice.thumbprint, ['smtp']],
        ['bob', bob.thumbprint, ['smtp', 'pop3']],
      ],
    );
  });

  it('resolves relative paths against the config file directory, not the working directory', async () => {
    const file = await configFile(`${validServer()}tls: { cert: certs/cert.pem, key: /abs/key.pem }\n`);
    const config = await loadServerConfig(file);
    assert.equal(config.tls?.cert, path.join(path.dirname(file), 'certs', 'cert.pem'));
    assert.equal(config.tls?.key, '/abs/key.pem');
  });

  it('keeps explicit limits and fills the others', async () => {
    const file = await configFile(`${validServer()}limits: { windowBytes: 1024, pingIntervalMs: 50, idleTimeoutMs: 200 }\n`);
    const { limits } = await loadServerConfig(file);
    assert.deepEqual(limits, { ...Defaults, windowBytes: 1024, pingIntervalMs: 50, idleTimeoutMs: 200 });
  });

  it('accepts deploy/server.example.yaml once its key files exist', async () => {
    const file = await configFile('');
    const sub = path.dirname(file);
    await copyFile(new URL('../../deploy/server.example.yaml', import.meta.url), file);
    await writeIdentityFiles(path.join(sub, 'host.jwk'), await generateIdentity());
    await mkdir(path.join(sub, 'clients'));
    await writeIdentityFiles(path.join(sub, 'clients', 'alice.jwk'), await generateIdentity());
    const config = await loadServerConfig(file);
    assert.deepEqual(Object.keys(config.services), ['smtp', 'pop3', 'nntp']);
    assert.equal(config.trustProxy, 'loopback');
  });

  it('names the file when it cannot be read', async () => {
    const missing = path.join(dir, 'nope.yaml');
    await rejectsWith(loadServerConfig(missing), missing, 'no such file');
  });

  it('reports YAML syntax errors with line and column', async () => {
    const file = await configFile('hostKey: host.jwk\nlisten:\n  host: a: b\n');
    await rejectsWith(loadServerConfig(file), file, 'line 3, column 9: Nested mappings are not allowed');
  });

  it('refuses duplicate YAML keys', async () => {
    const file = await configFile('hostKey: a.jwk\nhostKey: b.jwk\n');
    await rejectsWith(loadServerConfig(file), file, 'line 2, column 1', 'unique');
  });

  it('reports a missing hostKey in an empty file', async () => {
    const file = await configFile('');
    assert.equal(await rejectsWith(loadServerConfig(file)), `${file}: hostKey: missing (expected a file path)`);
  });

  it('prefixes key-file errors with the config file and key path', async () => {
    const file = await configFile(validServer().replace('../clients/alice.jwk.pub', '../not-a-key.json'));
    await rejectsWith(loadServerConfig(file), file, 'clients[0].keyFile', 'not-a-key.json', 'Ed25519');
    const absent = await configFile(validServer().replace('../clients/alice.jwk.pub', 'absent.pub'));
    await rejectsWith(loadServerConfig(absent), absent, 'clients[0].keyFile', 'absent.pub', 'no such file');
  });
});

describe('parseServerConfig errors', () => {
  const base = (): Record<string, unknown> => ({
    hostKey: 'host.jwk',
    services: { smtp: '127.0.0.1:25', pop3: { host: '127.0.0.1', port: 110 } },
    clients: [{ name: 'alice', key: alice.publicJwk, services: ['smtp'] }],
  });
  const parse = (changes: Record<string, unknown>) => parseServerConfig({ ...base(), ...changes }, 'server.yaml', dir);
  const cases: [string, Record<string, unknown>, string][] = [
    ['a service target without a port', { services: { smtp: 'localhost' } }, 'server.yaml: services.smtp: expected "host:port" or { host, port }, got "localhost"'],
    ['an object target with a bad port', { services: { smtp: { host: 'mx', port: 0 } } }, 'server.yaml: services.smtp.port: expected an integer between 1 and 65535, got 0'],
    ['an unbracketed IPv6 target', { services: { smtp: '::1:25' } }, 'server.yaml: services.smtp: expected "host:port" or { host, port }, got "::1:25" (IPv6 addresses go in brackets, e.g. [::1]:25)'],
    ['a bad service name', { services: { SMTP: '127.0.0.1:25' }, clients: [] }, 'server.yaml: services.SMTP: invalid service name'],
    [
      'a client naming an unknown service',
      { clients: [{ name: 'alice', key: alice.publicJwk, services: ['smtp'] }, { name: 'bob', key: bob.publicJwk, services: ['imap'] }] },
      'server.yaml: clients[1].services[0]: unknown service "imap" (configured: smtp, pop3)',
    ],
    ['a negative window', { limits: { windowBytes: -5 } }, 'server.yaml: limits.windowBytes: expected an integer between 1024 and 1073741824, got -5'],
    ['a record size above the protocol maximum', { limits: { maxRecordBytes: 2 ** 21 } }, 'server.yaml: limits.maxRecordBytes: expected an integer between 1024 and 1048576, got 2097152'],
    ['a tiny rekey interval', { limits: { rekeyBytes: 100 } }, 'server.yaml: limits.rekeyBytes: expected an integer of at least 16384, got 100'],
    ['a fractional limit', { limits: { maxStreamsPerSession: 1.5 } }, 'server.yaml: limits.maxStreamsPerSession: expected an integer between 1 and 1000000, got 1.5'],
    ['an idle timeout below the ping interval', { limits: { pingIntervalMs: 1000, idleTimeoutMs: 500 } }, 'server.yaml: limits.idleTimeoutMs: expected more than limits.pingIntervalMs (1000), got 500'],
    ['an unknown top-level key', { listne: {} }, 'server.yaml: unknown key "listne" (expected one of: listen, path, hostKey,'],
    ['an unknown nested key', { limits: { windowbytes: 1 } }, 'server.yaml: limits: unknown key "windowbytes" (expected one of: handshakeTimeoutMs, windowBytes,'],
    ['a path without a slash', { path: 'tunnel' }, 'server.yaml: path: expected a URL path starting with "/", got "tunnel"'],
    ['a listen port out of range', { listen: { port: 70000 } }, 'server.yaml: listen.port: expected an integer between 0 and 65535, got 70000'],
    ['an unknown AEAD', { aead: 'openssl' }, 'server.yaml: aead: expected "auto", "sodium", "node" or "noble", got "openssl"'],
    ['an unknown log level', { log: { level: 'verbose' } }, 'server.yaml: log.level: expected one of fatal, error, warn, info, debug, trace, silent, got "verbose"'],
    ['a trustProxy mapping', { trustProxy: {} }, 'server.yaml: trustProxy: expected true, false, a hop count, or addresses/subnets, got a mapping'],
    ['services as a number', { services: 5 }, 'server.yaml: services: expected a mapping of service names to targets, got 5'],
    ['a client with neither keyFile nor key', { clients: [{ name: 'alice', services: [] }] }, 'server.yaml: clients[0]: expected exactly one of "keyFile"'],
    ['a client with both keyFile and key', { clients: [{ name: 'alice', keyFile: 'a.pub', key: alice.publicJwk, services: [] }] }, 'server.yaml: clients[0]: expected exactly one of "keyFile"'],
    ['an inline key that is not Ed25519', { clients: [{ name: 'alice', key: { kty: 'RSA' }, services: [] }] }, 'server.yaml: clients[0].key: not an Ed25519 JWK'],
    [
      'two clients with one name',
      { clients: [{ name: 'alice', key: alice.publicJwk, services: [] }, { name: 'alice', key: bob.publicJwk, services: [] }] },
      'server.yaml: clients[1].name: duplicate client name "alice" (also clients[0])',
    ],
    [
      'two clients with one key',
      { clients: [{ name: 'alice', key: alice.publicJwk, services: [] }, { name: 'bob', key: alice.publicJwk, services: [] }] },
      'server.yaml: clients[1].key: same key as clients[0] ("alice"); each client needs its own key',
    ],
    ['a client without services', { clients: [{ name: 'alice', key: alice.publicJwk }] }, 'server.yaml: clients[0].services: missing (expected a list of service names, or ["*"])'],
    ['a document that is not a mapping', { hostKey: ['x'] }, 'server.yaml: hostKey: expected a file path, got a list'],
  ];
  for (const [what, changes, expected] of cases) {
    it(`rejects ${what} in one sentence`, async () => {
      const message = await rejectsWith(parse(changes), 'server.yaml');
      assert.ok(message.startsWith(expected), `"${message}" should start with "${expected}"`);
    });
  }

  it('rejects a document that is a list', async () => {
    await rejectsWith(parseServerConfig([], 'server.yaml', dir), 'server.yaml: expected a mapping with keys listen,', 'got a list');
  });

  it('accepts IPv6 targets in brackets and trustProxy lists', async () => {
    const config = await parse({ services: { smtp: '[::1]:25' }, clients: [], trustProxy: ['loopback', '10.0.0.0/8'] });
    assert.deepEqual(config.services.smtp, { host: '::1', port: 25 });
    assert.equal(config.trustProxy, 'loopback, 10.0.0.0/8');
  });
});

describe('server admin, watch and log format', () => {
  const base = (): Record<string, unknown> => ({
    hostKey: 'host.jwk',
    services: { smtp: '127.0.0.1:25' },
    clients: [{ name: 'alice', key: alice.publicJwk, services: ['smtp'] }],
  });
  const parse = (changes: Record<string, unknown>, defaults = {}) =>
    parseServerConfig({ ...base(), ...changes }, 'server.yaml', dir, defaults);

  it('has no admin listener and no watch unless asked', async () => {
    const config = await parse({});
    assert.equal(config.admin, undefined);
    assert.equal(config.watch, false);
  });

  it('puts the admin listener on loopback by default', async () => {
    const config = await parse({ admin: {}, watch: true });
    assert.deepEqual(config.admin, { listen: { host: '127.0.0.1', port: DEFAULT_ADMIN_PORT } });
    assert.equal(config.watch, true);
  });

  it('keeps an admin token and accepts a non-loopback admin listener with one', async () => {
    const token = 'x'.repeat(MIN_ADMIN_TOKEN_LENGTH);
    const config = await parse({ admin: { listen: { host: '0.0.0.0', port: 9100 }, token } });
    assert.deepEqual(config.admin, { listen: { host: '0.0.0.0', port: 9100 }, token });
  });

  const cases: [string, Record<string, unknown>, string][] = [
    [
      'an admin listener open to the network without a token',
      { admin: { listen: { host: '0.0.0.0' } } },
      'server.yaml: admin.token: missing (expected a bearer token: admin.listen.host 0.0.0.0 is not a loopback address, so the admin listener would be open to the network)',
    ],
    ['a short admin token', { admin: { token: 'hunter2' } }, 'server.yaml: admin.token: expected a bearer token of at least 16 characters, got 7 characters'],
    ['an admin token with a space', { admin: { token: 'correct horse battery staple' } }, 'server.yaml: admin.token: expected a bearer token of printable ASCII characters without spaces'],
    [
      'the admin listener on the public port',
      { listen: { port: 8080 }, admin: { listen: { port: 8080 } } },
      'server.yaml: admin.listen.port: expected a port other than listen.port (8080): the admin listener never shares the public one',
    ],
    ['an unknown admin key', { admin: { tokne: 'x' } }, 'server.yaml: admin: unknown key "tokne" (expected one of: listen, token)'],
    ['watch as a string', { watch: 'yes' }, 'server.yaml: watch: expected true or false, got "yes"'],
  ];
  for (const [what, changes, expected] of cases) {
    it(`rejects ${what} in one sentence`, async () => {
      assert.equal(await rejectsWith(parse(changes)), expected);
    });
  }

  it('never repeats the admin token in an error', async () => {
    const message = await rejectsWith(parse({ admin: { token: 'sekrit-token' } }));
    assert.ok(!message.includes('sekrit'), message);
  });

  it('takes the log format from the file, else from the caller\'s default, else json', async () => {
    assert.equal((await parse({})).log.format, 'json');
    assert.equal((await parse({}, { logFormat: 'pretty' })).log.format, 'pretty');
    assert.equal((await parse({ log: { format: 'json' } }, { logFormat: 'pretty' })).log.format, 'json');
  });

  it('remembers where each client key file is (watch reloads when it changes)', async () => {
    const file = await configFile(validServer());
    const config = await loadServerConfig(file);
    assert.equal(config.clients[0]!.keyFile, path.join(dir, 'clients', 'alice.jwk.pub'));
    assert.equal(config.clients[1]!.keyFile, undefined, 'an inline key has no file');
  });
});

describe('parseForwardSpec', () => {
  const good: [string, { host: string; port: number; service: string }][] = [
    ['2525=smtp', { host: '127.0.0.1', port: 2525, service: 'smtp' }],
    ['127.0.0.1:2525=smtp', { host: '127.0.0.1', port: 2525, service: 'smtp' }],
    ['[::1]:2525=smtp', { host: '::1', port: 2525, service: 'smtp' }],
    ['0.0.0.0:2525=smtp', { host: '0.0.0.0', port: 2525, service: 'smtp' }],
    ['localhost:1119=news.feed', { host: 'localhost', port: 1119, service: 'news.feed' }],
  ];
  for (const [spec, expected] of good) {
    it(`parses ${spec}`, () => assert.deepEqual(parseForwardSpec(spec), expected));
  }
  const bad: [string, string][] = [
    ['99999=smtp', '-L 99999=smtp: port must be 1-65535'],
    ['0=smtp', '-L 0=smtp: port must be 1-65535'],
    ['2525', '-L 2525: expected [HOST:]PORT=SERVICE'],
    ['=smtp', '-L =smtp: expected [HOST:]PORT=SERVICE'],
    ['2525=', '-L 2525=: expected [HOST:]PORT=SERVICE'],
    ['host:port=smtp', '-L host:port=smtp: expected [HOST:]PORT=SERVICE'],
    ['2525=SMTP', '-L 2525=SMTP: invalid service name "SMTP"'],
    ['::1:2525=smtp', '-L ::1:2525=smtp: IPv6 addresses go in brackets, e.g. [::1]:25'],
    ['[1.2.3.4]:2525=smtp', '-L [1.2.3.4]:2525=smtp: "1.2.3.4" is not an IPv6 address'],
  ];
  for (const [spec, expected] of bad) {
    it(`rejects ${spec}`, async () => assert.equal(await rejectsWith(() => parseForwardSpec(spec)), expected));
  }
});

describe('client options', () => {
  it('loads a client file, resolving paths against its directory and filling defaults', async () => {
    const file = await configFile(
      `url: wss://gw.example.com/tunnel\nidentity: alice.jwk\nserverKey: ${alice.thumbprint}\nforwards:\n  - 2525=smtp\n  - { port: 1119, service: nntp }\n`,
      'client.yaml',
    );
    const options = resolveClientOptions(await loadClientConfig(file), file, { HOME: '/home/test' });
    assert.deepEqual(options, {
      url: 'wss://gw.example.com/tunnel',
      identity: path.join(path.dirname(file), 'alice.jwk'),
      serverKey: alice.thumbprint,
      knownServers: '/home/test/.config/reflector/known_servers',
      forwards: [
        { host: '127.0.0.1', port: 2525, service: 'smtp' },
        { host: '127.0.0.1', port: 1119, service: 'nntp' },
      ],
      aead: 'auto',
      reconnect: { initialDelayMs: 200, maxDelayMs: 30_000, maxAttempts: 0 },
      headers: {},
      log: { level: 'info', format: 'json' },
    });
  });

  it('accepts deploy/client.example.yaml', async () => {
    const source = new URL('../../deploy/client.example.yaml', import.meta.url).pathname;
    const options = resolveClientOptions(await loadClientConfig(source), source);
    assert.equal(options.forwards.length, 3);
  });

  it('puts known_servers under XDG_CONFIG_HOME when it is set', () => {
    assert.equal(defaultKnownServers({ XDG_CONFIG_HOME: '/xdg', HOME: '/home/test' }), '/xdg/reflector/known_servers');
    assert.equal(defaultKnownServers({ XDG_CONFIG_HOME: 'relative', HOME: '/home/test' }), '/home/test/.config/reflector/known_servers');
  });

  it('lets flags override the file, adding forwards and merging headers', () => {
    const file = { url: 'ws://a/tunnel', identity: '/k/a.jwk', forwards: [parseForwardSpec('2525=smtp')], headers: { 'X-A': '1', 'X-B': '2' } };
    const flags = { url: 'ws://b/tunnel', forwards: [parseForwardSpec('1110=pop3')], headers: { 'X-B': '3' }, reconnect: { maxAttempts: 5 } };
    const options = resolveClientOptions(mergeClientInputs(file, flags), 'client.yaml');
    assert.equal(options.url, 'ws://b/tunnel');
    assert.equal(options.identity, '/k/a.jwk');
    assert.deepEqual(options.forwards.map((f) => f.service), ['smtp', 'pop3']);
    assert.deepEqual(options.headers, { 'X-A': '1', 'X-B': '3' });
    assert.deepEqual(options.reconnect, { initialDelayMs: 200, maxDelayMs: 30_000, maxAttempts: 5 });
  });

  it('keeps file values and defaults where a flag was not given (undefined)', () => {
    const file = { url: 'ws://a/tunnel', identity: '/k/a.jwk', log: { format: 'pretty' as const } };
    const flags = { url: undefined, log: { level: undefined, format: undefined }, reconnect: { maxAttempts: undefined } };
    const options = resolveClientOptions(mergeClientInputs(file, flags), 'client.yaml');
    assert.equal(options.url, 'ws://a/tunnel');
    assert.deepEqual(options.log, { level: 'info', format: 'pretty' });
    assert.equal(options.reconnect.maxAttempts, 0);
  });

  it('names flags instead of keys when given labels', async () => {
    await rejectsWith(() => parseClientInput({ serverKey: 'abc' }, '', { labels: { serverKey: '--server-key' } }), '--server-key: expected a 43-character');
  });

  const bad: [string, string, string][] = [
    ['an http URL', 'url: http://gw/tunnel\n', 'client.yaml: url: expected a ws:// or wss:// URL, got "http://gw/tunnel"'],
    ['a short server key', 'serverKey: abc\n', 'client.yaml: serverKey: expected a 43-character base64url key thumbprint'],
    ['a bad forward', 'forwards: [2525=smtp, "2526"]\n', 'client.yaml: forwards[1]: expected [HOST:]PORT=SERVICE, got "2526"'],
    ['a forward with a bad port', 'forwards: [{ port: 0, service: smtp }]\n', 'client.yaml: forwards[0].port: expected an integer between 1 and 65535, got 0'],
    ['a reserved header', 'headers: { Upgrade: h2c }\n', 'client.yaml: headers.Upgrade: header "Upgrade" is set by the WebSocket handshake'],
    ['a typo', 'identiy: a.jwk\n', 'client.yaml: unknown key "identiy" (expected one of: url, identity,'],
  ];
  for (const [what, text, expected] of bad) {
    it(`rejects ${what} in one sentence`, async () => {
      const file = await configFile(text, 'client.yaml');
      const message = await rejectsWith(loadClientConfig(file), file);
      assert.ok(message.startsWith(file.replace('client.yaml', '') + expected), `"${message}" should end with "${expected}"`);
    });
  }

  it('requires a URL and an identity', async () => {
    await rejectsWith(() => resolveClientOptions({}, 'client.yaml'), 'client.yaml: missing the server URL');
    await rejectsWith(() => resolveClientOptions({ url: 'ws://a/tunnel' }, ''), 'missing the client identity');
  });

  it('refuses a maximum reconnect delay below the initial one', async () => {
    const input = { url: 'ws://a/tunnel', identity: '/a.jwk', reconnect: { initialDelayMs: 500, maxDelayMs: 100 } };
    await rejectsWith(() => resolveClientOptions(input, 'client.yaml'), 'client.yaml: reconnect.maxDelayMs: expected at least');
  });
});

describe('parseHeaderFlag', () => {
  it('splits at the first colon and trims', () => {
    assert.deepEqual(parseHeaderFlag('X-Token:  a:b '), ['X-Token', 'a:b']);
  });
  it('rejects text without a name', async () => {
    await rejectsWith(() => parseHeaderFlag('no colon here'), '--header no colon here: expected "Name: value"');
    await rejectsWith(() => parseHeaderFlag(': x'), '--header : x: expected "Name: value"');
  });
});
