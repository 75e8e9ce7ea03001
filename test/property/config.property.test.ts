/**
 * The config parsers on arbitrary input keep their contract: a normalized
 * config, or a ConfigError whose message is one sentence that starts with
 * where the input came from — never another exception. Valid input comes
 * out with the invariants the server relies on (every client service is a
 * configured service, limits in range, paths absolute).
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import fc from 'fast-check';
import { SERVICE_NAME_PATTERN } from '../../shared/constants.js';
import { parseClientInput } from '../../shared/client-config.js';
import { parseServerConfig, type ServerConfig } from '../../shared/config-schema.js';
import { parseForwardSpec } from '../../shared/forward-spec.js';
import { ConfigError } from '../../shared/errors.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { IdentityError } from '../../shared/errors.js';
import { generateIdentity, parsePrivateJwk, parsePublicJwk, privateJwkOf, type Identity } from '../../shared/keys.js';
import { verifyKnownServer } from '../../client/known-servers.js';

const RUNS = { numRuns: 10_000 };
const SOURCE = 'server.yaml';
const BASE_DIR = path.resolve('/etc/reflector');

/** The parser's whole contract on hostile input: the value, or a one-sentence ConfigError naming the source. */
function configErrorOnly(error: unknown, source: string): void {
  if (!(error instanceof ConfigError)) throw error;
  assert.ok(error.message.startsWith(source), `the message does not start with ${JSON.stringify(source)}: ${error.message}`);
  assert.ok(error.message.length > source.length + 2, `an empty message: ${error.message}`);
}

const serviceName = fc.stringMatching(SERVICE_NAME_PATTERN);
const port = fc.integer({ min: 1, max: 65535 });
const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((parts) => parts.join('.'));
const hostname = fc.domain();
const ipv6 = fc.ipV6();

/** Text that looks a lot like config values, and some that does not. */
const texty = fc.oneof(
  fc.string(),
  fc.string({ unit: 'binary' }),
  serviceName,
  fc.constantFrom('*', '', ' ', '0', '-1', '127.0.0.1:25', '[::1]:25', '::1:25', 'host:', ':25', 'a:b:c', '__proto__', 'constructor', 'toString', '\u0000', 'é'),
  fc.tuple(fc.oneof(ipv4, hostname, ipv6), fc.integer({ min: -5, max: 70000 })).map(([h, p]) => `${h}:${p}`),
);

/** Any JSON-ish value, biased towards the shapes of a config. */
const value: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  any: fc.oneof(
    { depthSize: 'small' },
    texty,
    fc.integer(),
    fc.double(),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('any'), { maxLength: 4 }),
    fc.dictionary(fc.oneof(texty, fc.constantFrom('host', 'port', 'services', 'clients', 'limits', 'key', 'keyFile', 'name')), tie('any'), { maxKeys: 4 }),
  ),
})).any;

const limitKeys = [
  'handshakeTimeoutMs', 'windowBytes', 'maxRecordBytes', 'maxStreamsPerSession', 'rekeyBytes', 'pingIntervalMs',
  'idleTimeoutMs', 'maxUnauthenticatedPerAddress', 'maxUnauthenticated', 'maxSessionsPerClient', 'backendConnectTimeoutMs', 'drainTimeoutMs',
] as const;

describe('config parsers (property)', () => {
  let identities: Identity[];

  before(async () => {
    identities = await Promise.all(Array.from({ length: 3 }, () => generateIdentity()));
  });

  /** A config that is valid, or nearly: each part may be replaced by an arbitrary value. */
  function nearlyValidConfig(): fc.Arbitrary<Record<string, unknown>> {
    const services = fc.dictionary(serviceName, fc.oneof(fc.tuple(ipv4, port).map(([h, p]) => `${h}:${p}`), fc.record({ host: hostname, port })), {
      minKeys: 1,
      maxKeys: 4,
    });
    return services.chain((svc) => {
      const names = Object.keys(svc);
      const client = fc.record({
        name: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._@+-]{0,20}$/),
        key: fc.constantFrom(...identities.map((id) => id.publicJwk)),
        services: fc.array(fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...names, '*') }, { weight: 1, arbitrary: texty }), { maxLength: 3 }),
      });
      const limits = fc.dictionary(
        fc.constantFrom(...limitKeys),
        fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 0, max: 2 ** 31 }) }, { weight: 1, arbitrary: value }),
        { maxKeys: 3 },
      );
      /** Mostly the valid part; sometimes anything at all. */
      const mostly = <T>(valid: fc.Arbitrary<T>) => fc.oneof({ weight: 6, arbitrary: valid }, { weight: 1, arbitrary: value });
      const config = fc.record(
        {
          listen: mostly(fc.record({ host: fc.oneof(ipv4, hostname), port: fc.integer({ min: 0, max: 65535 }) })),
          hostKey: mostly(fc.constant('host.jwk')),
          services: mostly(fc.constant(svc)),
          clients: mostly(fc.uniqueArray(client, { maxLength: 3, selector: (c) => c.name })),
          limits: mostly(limits),
          path: mostly(fc.constant('/tunnel')),
          extra: value,
        },
        { requiredKeys: ['hostKey'] },
      );
      return config as fc.Arbitrary<Record<string, unknown>>;
    });
  }

  it('parseServerConfig: arbitrary values give a config or a ConfigError naming the source', async () => {
    await fc.assert(
      fc.asyncProperty(value, async (raw) => {
        await parseServerConfig(raw, SOURCE, BASE_DIR).catch((error: unknown) => configErrorOnly(error, SOURCE));
      }),
      RUNS,
    );
  });

  it('parseServerConfig: nearly valid configs give a config or a ConfigError naming the source', async () => {
    await fc.assert(
      fc.asyncProperty(nearlyValidConfig(), async (raw) => {
        await parseServerConfig(raw, SOURCE, BASE_DIR).catch((error: unknown) => configErrorOnly(error, SOURCE));
      }),
      RUNS,
    );
  });

  it('parseServerConfig: what it accepts holds the invariants the server relies on', async () => {
    await fc.assert(
      fc.asyncProperty(nearlyValidConfig(), async (raw) => {
        let config: ServerConfig;
        try {
          config = await parseServerConfig(raw, SOURCE, BASE_DIR);
        } catch (error) {
          configErrorOnly(error, SOURCE);
          return;
        }
        assert.ok(path.isAbsolute(config.hostKey));
        for (const name of Object.keys(config.services)) assert.match(name, SERVICE_NAME_PATTERN);
        for (const client of config.clients) {
          for (const service of client.services) {
            assert.ok(Object.hasOwn(config.services, service), `client ${client.name} is allowed "${service}", which is not a configured service`);
          }
        }
        assert.ok(config.limits.idleTimeoutMs > config.limits.pingIntervalMs);
        for (const key of limitKeys) assert.ok(Number.isSafeInteger(config.limits[key]) && config.limits[key] >= 0, key);
      }),
      RUNS,
    );
  });

  it('parseForwardSpec: arbitrary strings give a spec or a ConfigError naming the -L value', () => {
    fc.assert(
      fc.property(fc.oneof(texty, fc.tuple(texty, texty).map(([a, b]) => `${a}=${b}`)), (spec) => {
        try {
          const parsed = parseForwardSpec(spec);
          assert.match(parsed.service, SERVICE_NAME_PATTERN);
          assert.ok(parsed.port >= 1 && parsed.port <= 65535);
        } catch (error) {
          configErrorOnly(error, `-L ${spec}: `);
        }
      }),
      RUNS,
    );
  });

  it('parseForwardSpec: [HOST:]PORT=SERVICE round-trips for every valid host, port and service', () => {
    const spec = fc.record({ host: fc.option(fc.oneof(ipv4, hostname, ipv6), { nil: undefined }), port, service: serviceName });
    fc.assert(
      fc.property(spec, ({ host, port: p, service }) => {
        const address = host === undefined ? '' : host.includes(':') ? `[${host}]:` : `${host}:`;
        assert.deepEqual(parseForwardSpec(`${address}${p}=${service}`), { host: host ?? '127.0.0.1', port: p, service });
      }),
      RUNS,
    );
  });

  it('parseClientInput: arbitrary values give settings or a ConfigError naming the source', () => {
    fc.assert(
      fc.property(value, (raw) => {
        try {
          parseClientInput(raw, 'client.yaml', { baseDir: BASE_DIR });
        } catch (error) {
          configErrorOnly(error, 'client.yaml');
        }
      }),
      RUNS,
    );
  });

  it('parsePrivateJwk / parsePublicJwk: arbitrary key files give an identity or a ConfigError naming the file', async () => {
    const privateJwk = privateJwkOf(identities[0]!) as unknown as Record<string, unknown>;
    const jwkish = fc.oneof(
      value,
      fc.dictionary(fc.constantFrom('kty', 'crv', 'x', 'd', 'alg', 'use'), fc.oneof(texty, value), { maxKeys: 5 }),
      fc.tuple(fc.constantFrom('kty', 'crv', 'x', 'd'), value).map(([key, v]) => ({ ...privateJwk, [key]: v })),
      fc.string().map((text) => JSON.stringify(privateJwk).slice(0, text.length % 120) + text),
    );
    await fc.assert(
      fc.asyncProperty(jwkish, fc.boolean(), async (jwk, asPrivate) => {
        const where = asPrivate ? 'alice.jwk' : 'alice.jwk.pub';
        try {
          const identity = asPrivate ? await parsePrivateJwk(jwk, where) : await parsePublicJwk(jwk, where);
          assert.match(identity.thumbprint, /^[A-Za-z0-9_-]{43}$/);
        } catch (error) {
          configErrorOnly(error, where);
        }
      }),
      RUNS,
    );
  });

  it('verifyKnownServer: any file content gives known/unknown, an IdentityError naming both keys, or a ConfigError naming the file', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'reflector-known-'));
    const file = path.join(dir, 'known_servers');
    const thumbprint = fc.constantFrom(identities[0]!.thumbprint, identities[1]!.thumbprint);
    const line = fc.oneof(
      fc.tuple(fc.constantFrom('mail.example.com:443', 'MAIL.example.com:443', '[::1]:8443', 'x:1'), thumbprint).map(([h, t]) => `${h} ${t}`),
      fc.constantFrom('', '# comment', '   ', '\t# x'),
      texty,
    );
    await fc.assert(
      fc.asyncProperty(fc.array(line, { maxLength: 5 }), thumbprint, async (lines, presented) => {
        writeFileSync(file, lines.join('\n'));
        try {
          const result = await verifyKnownServer(file, 'mail.example.com:443', presented);
          assert.ok(result === 'known' || result === 'unknown');
        } catch (error) {
          if (error instanceof IdentityError) {
            assert.ok(error.message.includes(presented), `the warning does not name the presented key: ${error.message}`);
            return;
          }
          configErrorOnly(error, file);
        }
      }),
      RUNS,
    );
  });
});
