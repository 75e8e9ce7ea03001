/**
 * connectThroughProxy against a scripted proxy on loopback: each test decides
 * what the "proxy" answers to each CONNECT it reads, on the same socket.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import { ConnectError, ProxyAuthError } from '../../client/connect-error.js';
import { connectThroughProxy, offeredSchemes, type ProxyCredentials } from '../../client/proxy-connect.js';
import { ErrorCode } from '../../shared/errors.js';
import { unusedPort } from '../helpers/fixtures.js';
import { ntlmChallenge } from '../helpers/ntlm-challenge.js';

interface Request {
  line: string;
  headers: Record<string, string>;
  /** Which accepted connection it came on (0, 1, …). */
  connection: number;
}

/** What the script does with one request: answer with bytes (and maybe close), or nothing. */
type Script = (request: Request, socket: net.Socket, index: number) => void;

const servers: net.Server[] = [];
after(() => {
  for (const server of servers) server.close();
});

/** A fake proxy: parses request heads one after another on each connection and hands them to `script`. */
async function fakeProxy(script: Script): Promise<{ url: URL; requests: Request[] }> {
  const requests: Request[] = [];
  let connections = 0;
  const server = net.createServer((socket) => {
    const connection = connections++;
    let buffered = '';
    socket.on('error', () => undefined);
    socket.on('data', (chunk) => {
      buffered += chunk.toString('latin1');
      for (let end = buffered.indexOf('\r\n\r\n'); end >= 0; end = buffered.indexOf('\r\n\r\n')) {
        const [line = '', ...rest] = buffered.slice(0, end).split('\r\n');
        buffered = buffered.slice(end + 4);
        const headers = Object.fromEntries(rest.map((header) => [header.slice(0, header.indexOf(':')).toLowerCase(), header.slice(header.indexOf(':') + 1).trim()]));
        const request = { line, headers, connection };
        requests.push(request);
        script(request, socket, requests.length - 1);
      }
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: new URL(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`), requests };
}

const TARGET = { host: 'gateway.example.com', port: 443 };

function connect(proxy: URL, credentials?: ProxyCredentials, timeoutMs = 2_000): Promise<net.Socket> {
  return connectThroughProxy({ proxy, target: TARGET, timeoutMs, ...(credentials ? { credentials } : {}) });
}

function readAvailable(socket: net.Socket, bytes: number): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    socket.on('data', (chunk) => {
      text += chunk.toString();
      if (text.length >= bytes) resolve(text);
    });
  });
}

describe('connectThroughProxy', () => {
  it('sends CONNECT host:port with a Host header and returns the socket once the proxy says 200', async () => {
    const proxy = await fakeProxy((_request, socket) => {
      socket.write('HTTP/1.1 200 Connection established\r\n\r\n');
      socket.on('data', (data) => socket.write(data)); // then the tunnel echoes
    });
    const socket = await connect(proxy.url);
    assert.equal(proxy.requests[0]!.line, 'CONNECT gateway.example.com:443 HTTP/1.1');
    assert.equal(proxy.requests[0]!.headers.host, 'gateway.example.com:443');
    assert.equal(proxy.requests[0]!.headers['proxy-authorization'], undefined);
    socket.write('ping');
    assert.equal(await readAvailable(socket, 4), 'ping');
    socket.destroy();
  });

  it('hands over bytes that arrived right behind the 200 head', async () => {
    const proxy = await fakeProxy((_request, socket) => socket.write('HTTP/1.0 200 OK\r\nProxy-agent: x\r\n\r\nEARLY'));
    const socket = await connect(proxy.url);
    assert.equal(await readAvailable(socket, 5), 'EARLY');
    socket.destroy();
  });

  it('brackets an IPv6 target', async () => {
    const proxy = await fakeProxy((_request, socket) => socket.write('HTTP/1.1 200 OK\r\n\r\n'));
    const socket = await connectThroughProxy({ proxy: proxy.url, target: { host: '::1', port: 8443 }, timeoutMs: 2_000 });
    assert.equal(proxy.requests[0]!.line, 'CONNECT [::1]:8443 HTTP/1.1');
    socket.destroy();
  });

  it('sends Basic credentials with the first request', async () => {
    const proxy = await fakeProxy((_request, socket) => socket.write('HTTP/1.1 200 OK\r\n\r\n'));
    const socket = await connect(proxy.url, { scheme: 'basic', user: 'bob', password: 'p:ss wörd' });
    assert.equal(proxy.requests[0]!.headers['proxy-authorization'], `Basic ${Buffer.from('bob:p:ss wörd').toString('base64')}`);
    socket.destroy();
  });

  it('runs NTLM Type 1 → 407 challenge → Type 3 on one connection, draining a chunked 407 body in between', async () => {
    const proxy = await fakeProxy((request, socket, index) => {
      if (index === 0) {
        assert.match(request.headers['proxy-authorization'] ?? '', /^NTLM TlRMTVNTUAAB/); // "NTLMSSP\0" + type 1
        const body = 'x'.repeat(3000);
        socket.write(
          `HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: NTLM ${ntlmChallenge()}\r\nProxy-Authenticate: Basic realm="r"\r\n` +
            `Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n${(1000).toString(16)}\r\n${body.slice(0, 1000)}\r\n${(2000).toString(16)}\r\n${body.slice(1000)}\r\n0\r\n\r\n`,
        );
      } else {
        socket.write('HTTP/1.1 200 Connection established\r\n\r\n');
      }
    });
    const socket = await connect(proxy.url, { scheme: 'ntlm', user: 'alice', domain: 'CORP', password: 'secret' });
    assert.equal(proxy.requests.length, 2);
    assert.equal(proxy.requests[1]!.connection, 0, 'Type 3 on the same connection as Type 1');
    const type3 = Buffer.from(proxy.requests[1]!.headers['proxy-authorization']!.replace(/^NTLM /, ''), 'base64');
    assert.equal(type3.readUInt32LE(8), 3);
    const user = type3.subarray(type3.readUInt32LE(40), type3.readUInt32LE(40) + type3.readUInt16LE(36));
    assert.equal(user.toString('utf16le'), 'alice');
    socket.destroy();
  });

  it('drains a Content-Length 407 body before sending Type 3', async () => {
    const proxy = await fakeProxy((_request, socket, index) => {
      if (index === 0) socket.write(`HTTP/1.1 407 Auth\r\nProxy-Authenticate: NTLM ${ntlmChallenge()}\r\nContent-Length: 11\r\n\r\nhello world`);
      else socket.write('HTTP/1.1 200 OK\r\n\r\n');
    });
    const socket = await connect(proxy.url, { scheme: 'ntlm', user: 'alice', domain: '', password: 'pw' });
    assert.equal(proxy.requests.length, 2);
    assert.equal(proxy.requests[1]!.line, 'CONNECT gateway.example.com:443 HTTP/1.1', 'the body was not taken for the next request');
    socket.destroy();
  });

  it('407 without credentials: a fatal ProxyAuthError naming the offered schemes and the flags to pass', async () => {
    const proxy = await fakeProxy((_request, socket) =>
      socket.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: NTLM\r\nProxy-Authenticate: Basic realm="corp"\r\nContent-Length: 0\r\n\r\n'),
    );
    await assert.rejects(connect(proxy.url), (error: unknown) => {
      assert.ok(error instanceof ProxyAuthError);
      assert.equal(error.code, ErrorCode.CONNECT_FAILED);
      assert.equal(
        error.message,
        `proxy ${proxy.url.origin} requires authentication (it offers: NTLM, Basic); pass --proxy-auth ntlm --proxy-user DOMAIN\\USER with the password in REFLECTOR_PROXY_PASSWORD or --proxy-password-file`,
      );
      return true;
    });
  });

  it('407 after Basic credentials: the proxy refused them', async () => {
    const proxy = await fakeProxy((_request, socket) => socket.end('HTTP/1.1 407 No\r\nProxy-Authenticate: Basic realm="x"\r\nContent-Length: 0\r\n\r\n'));
    await assert.rejects(connect(proxy.url, { scheme: 'basic', user: 'bob', password: 'wrong' }), (error: unknown) => {
      assert.ok(error instanceof ProxyAuthError);
      assert.equal(error.message, `proxy ${proxy.url.origin} refused the credentials of bob (Basic)`);
      assert.ok(!error.message.includes('wrong'));
      return true;
    });
  });

  it('407 after NTLM Type 3: the proxy refused DOMAIN\\user', async () => {
    const proxy = await fakeProxy((_request, socket, index) => {
      const header = index === 0 ? `NTLM ${ntlmChallenge()}` : 'NTLM';
      socket.write(`HTTP/1.1 407 No\r\nProxy-Authenticate: ${header}\r\nContent-Length: 0\r\n\r\n`);
    });
    await assert.rejects(connect(proxy.url, { scheme: 'ntlm', user: 'alice', domain: 'CORP', password: 'pw' }), {
      name: 'ProxyAuthError',
      message: `proxy ${proxy.url.origin} refused the credentials of CORP\\alice (NTLM)`,
    });
  });

  it('NTLM against a Basic-only proxy: says which schemes it does accept', async () => {
    const proxy = await fakeProxy((_request, socket) => socket.end('HTTP/1.1 407 No\r\nProxy-Authenticate: Basic realm="x"\r\nContent-Length: 0\r\n\r\n'));
    await assert.rejects(connect(proxy.url, { scheme: 'ntlm', user: 'alice', domain: '', password: 'pw' }), {
      name: 'ProxyAuthError',
      message: `proxy ${proxy.url.origin} does not accept NTLM authentication (it offers: Basic); pass --proxy-auth basic`,
    });
  });

  it('an NTLM challenge on a connection the proxy closes cannot be answered', async () => {
    const proxy = await fakeProxy((_request, socket) =>
      socket.write(`HTTP/1.1 407 No\r\nProxy-Authenticate: NTLM ${ntlmChallenge()}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`),
    );
    await assert.rejects(connect(proxy.url, { scheme: 'ntlm', user: 'a', domain: '', password: 'b' }), {
      name: 'ConnectError',
      message: `proxy ${proxy.url.origin} closed the connection after its NTLM challenge; NTLM needs a kept-alive connection`,
    });
  });

  it('a malformed NTLM challenge is named', async () => {
    const proxy = await fakeProxy((_request, socket) => socket.write('HTTP/1.1 407 No\r\nProxy-Authenticate: NTLM AAAA\r\nContent-Length: 0\r\n\r\n'));
    await assert.rejects(connect(proxy.url, { scheme: 'ntlm', user: 'a', domain: '', password: 'b' }), /sent a malformed NTLM challenge: the NTLM challenge does not start with the NTLMSSP signature$/);
  });

  it('a refused CONNECT is a retryable ConnectError with the status', async () => {
    const proxy = await fakeProxy((_request, socket) => socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope'));
    await assert.rejects(connect(proxy.url), (error: unknown) => {
      assert.ok(error instanceof ConnectError && !(error instanceof ProxyAuthError));
      assert.equal(error.message, `proxy ${proxy.url.origin} refused CONNECT to gateway.example.com:443: 403 Forbidden`);
      return true;
    });
  });

  it('an unreachable proxy says so', async () => {
    const port = await unusedPort();
    await assert.rejects(connect(new URL(`http://127.0.0.1:${port}`)), {
      name: 'ConnectError',
      message: `proxy http://127.0.0.1:${port} unreachable: connection refused`,
    });
  });

  it('a proxy that hangs up without answering, or answers nonsense, or nothing at all', async () => {
    const hangUp = await fakeProxy((_request, socket) => socket.destroy());
    await assert.rejects(connect(hangUp.url), { message: `proxy ${hangUp.url.origin} closed the connection during CONNECT` });
    const nonsense = await fakeProxy((_request, socket) => socket.write('SSH-2.0-OpenSSH\r\n\r\n'));
    await assert.rejects(connect(nonsense.url), /sent a malformed response to CONNECT \("SSH-2.0-OpenSSH" instead of an HTTP status line\)$/);
    const silent = await fakeProxy(() => undefined);
    await assert.rejects(connect(silent.url, undefined, 300), {
      message: `proxy ${silent.url.origin} did not answer the CONNECT to gateway.example.com:443 within 300 ms`,
    });
  });

  it('never puts credentials from the proxy URL into messages', async () => {
    const proxy = await fakeProxy((_request, socket) => socket.end('HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n'));
    const withSecret = new URL(proxy.url);
    withSecret.username = 'user';
    withSecret.password = 'hunter2';
    await assert.rejects(connectThroughProxy({ proxy: withSecret, target: TARGET, timeoutMs: 2_000 }), (error: Error) => {
      assert.ok(!error.message.includes('hunter2') && !error.message.includes('user@'), error.message);
      return true;
    });
  });
});

describe('offeredSchemes', () => {
  it('lists each Proxy-Authenticate scheme once, in order', () => {
    const headers = new Map([['proxy-authenticate', ['Negotiate', 'NTLM', 'Basic realm="a"', 'ntlm xyz']]]);
    assert.deepEqual(offeredSchemes({ headers }), ['Negotiate', 'NTLM', 'Basic']);
  });
});
