/**
 * A newcomer's first minutes: `reflector quickstart` (what `npm start` runs)
 * prints a `npx reflector connect …` line, and that exact line, run from the
 * checkout in a shell, carries curl's request to the gateway's /healthz.
 * Needs `npm run build` first (npm test runs it).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { access, constants, mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { unusedPort } from '../helpers/fixtures.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const CLI = path.join(REPO, 'dist', 'bin', 'reflector.js');

/** Collects a child's output and resolves when `pattern` appears in it. */
function waitForOutput(child: ChildProcess, pattern: RegExp, what: string, timeoutMs = 30_000): Promise<RegExpMatchArray> {
  let text = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs} ms; output so far:\n${text}`)), timeoutMs);
    const onData = (chunk: Buffer): void => {
      text += chunk.toString('utf8');
      const match = text.match(pattern);
      if (match) {
        clearTimeout(timer);
        resolve(match);
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited (${code}) before ${what}; output:\n${text}`));
    });
  });
}

function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (response) => {
        let body = '';
        response.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

function stop(child: ChildProcess | undefined): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    // By PID: the shell's process group (sh, npx, node) for the client, the node child for the gateway.
    try {
      process.kill(-child.pid!, 'SIGTERM');
    } catch {
      child.kill('SIGTERM');
    }
  });
}

let dir: string;
let gateway: ChildProcess | undefined;
let client: ChildProcess | undefined;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'reflector-quickstart-'));
});
after(async () => {
  await stop(client);
  await stop(gateway);
  await rm(dir, { recursive: true, force: true });
});

describe('quickstart', () => {
  it('the built command is executable, so npx can run it', async () => {
    await access(CLI, constants.X_OK);
  });

  it('prints a connect line that, run as printed, tunnels curl to /healthz', async () => {
    const port = await unusedPort();
    gateway = spawn(process.execPath, [CLI, 'quickstart', '--dir', path.join(dir, 'state'), '--port', String(port)], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    const [line] = await waitForOutput(gateway, /^ {2}npx reflector connect .+$/m, 'connect line');
    const command = line.trim();
    assert.match(command, new RegExp(`-L 127\\.0\\.0\\.1:${port + 1}=status`));

    client = spawn('sh', ['-c', command], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: { ...process.env, CI: 'true' } });
    await waitForOutput(client, /session\.open|session open|connected/i, 'client session open');
    const response = await get(`http://127.0.0.1:${port + 1}/healthz`);
    assert.equal(response.status, 200, `healthz through the tunnel: ${response.body}`);
  });
});
