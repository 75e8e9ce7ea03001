/**
 * Real mail and news servers from Debian, each on a loopback port picked at
 * run time, configured in its own fresh temp dir, started in the foreground
 * as a child process and stopped by its PID:
 *
 *   startOpenSmtpd()  OpenSMTPD (opensmtpd): accepts any recipient into a maildir
 *   startDovecot()    Dovecot POP3 (dovecot-core, dovecot-pop3d): one passwd-file user, a maildir
 *   startInnd()       INN innd (inn2): its whole tree relocated through INNCONF
 *
 * The daemons need root: they drop privileges themselves (OpenSMTPD to its
 * own users and `nobody` for delivery, Dovecot to `nobody`; innd runs as
 * `news` through setpriv).
 */
import { chmod, link, mkdir, mkdtemp, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort, pidAlive, run, runOk, ServiceProcess, sleep, waitForPort } from './child-process.js';
import { program, root, type Requirement } from './requirements.js';

export interface ServiceTarget {
  host: string;
  port: number;
}

export interface MailServer {
  /** Where the server listens (127.0.0.1 and a runtime port): the gateway's service target. */
  readonly target: ServiceTarget;
  /** The temp dir holding its config, data and logs (removed by stop()). */
  readonly dir: string;
  readonly process: ServiceProcess;
  /** Its stdout/stderr and log files, for failure messages. */
  logs(): Promise<string>;
  /** Stops the PID it started, waits for the exit, removes the temp dir. Idempotent. */
  stop(): Promise<void>;
}

async function makeDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  // mkdtemp makes 0700; the daemons' unprivileged users must traverse it.
  await chmod(dir, 0o755);
  return dir;
}

async function readIfThere(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    return ''; // not written (yet): nothing to show
  }
}

// ---------------------------------------------------------------- OpenSMTPD

export const SMTPD = '/usr/sbin/smtpd';
export const OPENSMTPD_REQUIREMENTS: readonly Requirement[] = [program(SMTPD, 'opensmtpd'), root()];

/**
 * OpenSMTPD keeps its queue in the global /var/spool/smtpd and its control
 * socket in /run/smtpd.sock, so only one instance may run on the machine at a
 * time: this lock file (holding the owner's PID) serializes test files that
 * start one. A lock whose owner is gone is taken over.
 */
const SMTPD_LOCK = path.join(os.tmpdir(), 'reflector-system-opensmtpd.lock');

async function acquireSmtpdLock(timeoutMs: number): Promise<() => Promise<void>> {
  const deadline = Date.now() + timeoutMs;
  // The PID is written first and the lock appears with link(), atomically:
  // a waiter never reads a lock file that has no owner in it yet.
  const mine = `${SMTPD_LOCK}.${process.pid}.${Date.now()}`;
  await writeFile(mine, String(process.pid));
  try {
    for (;;) {
      try {
        await link(mine, SMTPD_LOCK);
        let released = false;
        return async () => {
          if (released) return;
          released = true;
          if ((await readIfThere(SMTPD_LOCK)).trim() === String(process.pid)) await unlink(SMTPD_LOCK).catch(() => undefined);
        };
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      const seen = (await readIfThere(SMTPD_LOCK)).trim();
      const owner = Number(seen);
      if (seen !== '' && (!Number.isInteger(owner) || owner <= 0 || !pidAlive(owner))) {
        // A stale lock (its test process died): remove it, unless someone
        // else replaced it meanwhile, and try again.
        if ((await readIfThere(SMTPD_LOCK)).trim() === seen) await unlink(SMTPD_LOCK).catch(() => undefined);
        continue;
      }
      if (Date.now() > deadline) {
        throw new Error(`OpenSMTPD is in use by pid ${seen} (lock ${SMTPD_LOCK}) for more than ${timeoutMs} ms`);
      }
      await sleep(200);
    }
  } finally {
    await unlink(mine).catch(() => undefined); // the link, if made, keeps the content
  }
}

export interface StoredMessage {
  file: string;
  content: Buffer;
}

export interface OpenSmtpd extends MailServer {
  /** The maildir every message is delivered to (as user nobody). */
  readonly maildir: string;
  /** Every delivered message file (maildir new/ and cur/). */
  messages(): Promise<StoredMessage[]>;
  /** Waits until a delivered message satisfies `match` (e.g. carries a Message-ID). */
  waitForMessage(match: (content: Buffer) => boolean, what: string, timeoutMs?: number): Promise<StoredMessage>;
}

/** Starts OpenSMTPD on 127.0.0.1 with a catch-all virtual user delivering to a maildir in its temp dir. */
export async function startOpenSmtpd(options: { lockTimeoutMs?: number } = {}): Promise<OpenSmtpd> {
  const release = await acquireSmtpdLock(options.lockTimeoutMs ?? 180_000);
  let made: string | undefined;
  try {
    const dir = await makeDir('reflector-opensmtpd-');
    made = dir;
    const port = await freePort();
    const maildir = path.join(dir, 'Maildir');
    await mkdir(maildir);
    await chmod(maildir, 0o777); // delivery runs as nobody and creates new/ cur/ tmp/
    // Without the catch-all virtual table OpenSMTPD answers 550 Invalid recipient.
    await writeFile(path.join(dir, 'vusers'), '@ nobody\n');
    const config = path.join(dir, 'smtpd.conf');
    await writeFile(
      config,
      [
        `table vusers file:${path.join(dir, 'vusers')}`,
        'smtp max-message-size 64M',
        `listen on 127.0.0.1 port ${port}`,
        `action "sink" maildir "${maildir}" virtual <vusers>`,
        'match from any for any action "sink"',
        '',
      ].join('\n'),
    );
    const child = new ServiceProcess({ name: 'opensmtpd', command: SMTPD, args: ['-d', '-f', config] });
    const server = new OpenSmtpdInstance(dir, { host: '127.0.0.1', port }, maildir, child, release);
    try {
      await waitForPort(port, child);
    } catch (error) {
      await server.stop();
      throw error;
    }
    return server;
  } catch (error) {
    if (made !== undefined) await rm(made, { recursive: true, force: true });
    await release();
    throw error;
  }
}

class OpenSmtpdInstance implements OpenSmtpd {
  private stopping: Promise<void> | undefined;
  constructor(
    readonly dir: string,
    readonly target: ServiceTarget,
    readonly maildir: string,
    readonly process: ServiceProcess,
    private readonly release: () => Promise<void>,
  ) {}

  async messages(): Promise<StoredMessage[]> {
    const found: StoredMessage[] = [];
    for (const sub of ['new', 'cur']) {
      let names: string[];
      try {
        names = await readdir(path.join(this.maildir, sub));
      } catch {
        continue; // no delivery yet: the MDA creates new/ and cur/ on first use
      }
      for (const name of names.sort()) {
        const file = path.join(this.maildir, sub, name);
        found.push({ file, content: await readFile(file) });
      }
    }
    return found;
  }

  async waitForMessage(match: (content: Buffer) => boolean, what: string, timeoutMs = 30_000): Promise<StoredMessage> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = (await this.messages()).find((message) => match(message.content));
      if (hit !== undefined) return hit;
      if (Date.now() > deadline) throw this.process.failure(`no delivered message ${what} in ${this.maildir} after ${timeoutMs} ms`);
      await sleep(100);
    }
  }

  async logs(): Promise<string> {
    return this.process.output();
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      try {
        await this.process.stop({ timeoutMs: 10_000 });
      } finally {
        await rm(this.dir, { recursive: true, force: true });
        await this.release();
      }
    })();
    return this.stopping;
  }
}

// ---------------------------------------------------------------- Dovecot POP3

export const DOVECOT = '/usr/sbin/dovecot';
export const DOVECOT_REQUIREMENTS: readonly Requirement[] = [
  program(DOVECOT, 'dovecot-core'),
  program('/usr/lib/dovecot/pop3', 'dovecot-pop3d'),
  root(),
];

export interface DovecotOptions {
  user: string;
  password: string;
  /** Messages placed in the user's maildir, in order (POP3 message 1 is the first). */
  messages: readonly Buffer[];
}

export interface Dovecot extends MailServer {
  readonly user: string;
  readonly password: string;
  /** The user's maildir. */
  readonly maildir: string;
  /** Message files still in the maildir (new/ and cur/): fewer after a DELE and QUIT. */
  messageFiles(): Promise<string[]>;
}

async function numericId(args: string[]): Promise<number> {
  const { stdout } = await runOk('id', args);
  return Number(stdout.trim());
}

/** Starts Dovecot with only POP3, plaintext auth allowed, one user in a passwd-file, mail as `nobody`. */
export async function startDovecot(options: DovecotOptions): Promise<Dovecot> {
  const dir = await makeDir('reflector-dovecot-');
  try {
    const port = await freePort();
    const uid = await numericId(['-u', 'nobody']);
    const gid = await numericId(['-g', 'nobody']);
    const home = path.join(dir, 'home', options.user);
    const maildir = path.join(home, 'Maildir');
    for (const sub of ['new', 'cur', 'tmp']) await mkdir(path.join(maildir, sub), { recursive: true });
    await mkdir(path.join(dir, 'run'));
    await mkdir(path.join(dir, 'state'));
    // Maildir file names sort in delivery order; Dovecot numbers messages by that order.
    const base = 1_700_000_000;
    for (const [index, message] of options.messages.entries()) {
      await writeFile(path.join(maildir, 'new', `${base + index}.M${index + 1}P${process.pid}.reflector-test`), message);
    }
    await runOk('chown', ['-R', `${uid}:${gid}`, path.join(dir, 'home')]);
    await writeFile(path.join(dir, 'users'), `${options.user}:{PLAIN}${options.password}::::::\n`, { mode: 0o644 });
    const config = path.join(dir, 'dovecot.conf');
    await writeFile(
      config,
      `base_dir = ${dir}/run
state_dir = ${dir}/state
instance_name = reflector-test-${port}
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = ${dir}/dovecot.log
first_valid_uid = ${uid}
last_valid_uid = ${uid}
mail_location = maildir:~/Maildir
pop3_uidl_format = %08Xu%08Xv
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u ${dir}/users
}
userdb {
  driver = static
  args = uid=${uid} gid=${gid} home=${dir}/home/%u
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = ${port}
  }
  inet_listener pop3s {
    port = 0
  }
}
`,
    );
    const child = new ServiceProcess({ name: 'dovecot', command: DOVECOT, args: ['-F', '-c', config] });
    const server = new DovecotInstance(dir, { host: '127.0.0.1', port }, options, maildir, child);
    try {
      await waitForPort(port, child);
    } catch (error) {
      const logs = await server.logs();
      await server.stop();
      throw new Error(`${(error as Error).message}\n--- dovecot.log ---\n${logs}`);
    }
    return server;
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

class DovecotInstance implements Dovecot {
  readonly user: string;
  readonly password: string;
  private stopping: Promise<void> | undefined;
  constructor(
    readonly dir: string,
    readonly target: ServiceTarget,
    options: DovecotOptions,
    readonly maildir: string,
    readonly process: ServiceProcess,
  ) {
    this.user = options.user;
    this.password = options.password;
  }

  async messageFiles(): Promise<string[]> {
    const files: string[] = [];
    for (const sub of ['new', 'cur']) {
      for (const name of (await readdir(path.join(this.maildir, sub))).sort()) files.push(path.join(sub, name));
    }
    return files;
  }

  async logs(): Promise<string> {
    return `${this.process.output()}${await readIfThere(path.join(this.dir, 'dovecot.log'))}`;
  }

  stop(): Promise<void> {
    // The master process stops its login, auth and pop3 children before it exits.
    this.stopping ??= (async () => {
      try {
        await this.process.stop({ timeoutMs: 10_000 });
      } finally {
        await rm(this.dir, { recursive: true, force: true });
      }
    })();
    return this.stopping;
  }
}

// ---------------------------------------------------------------- INN (innd)

export const INN_BIN = '/usr/lib/news/bin';
export const INND_REQUIREMENTS: readonly Requirement[] = [
  program(`${INN_BIN}/innd`, 'inn2'),
  program(`${INN_BIN}/ctlinnd`, 'inn2'),
  program(`${INN_BIN}/makedbz`, 'inn2'),
  program(`${INN_BIN}/nnrpd`, 'inn2'),
  program('setpriv', 'util-linux'),
  root(),
];

export interface InndOptions {
  /** Newsgroups created (postable); default ["local.test"]. */
  groups?: readonly string[];
}

export interface Innd extends MailServer {
  readonly groups: readonly string[];
  /** The relocated inn.conf (INNCONF for innd, ctlinnd and friends). */
  readonly innconf: string;
  /** Runs ctlinnd as `news` against this instance. */
  ctlinnd(args: readonly string[]): Promise<string>;
}

const AS_NEWS = ['--reuid=news', '--regid=news', '--init-groups'] as const;

/** inn.conf keys that name paths or the port: replaced by ours so nothing touches /var/lib/news or /etc/news. */
const RELOCATED_KEYS = /^(path[a-z]+|port|bindaddress6?|domain|pathhost|pgpverify|doinnwatch|nnrpdpostport):/;

/**
 * Starts innd with a copy of /etc/news and every path (db, spool, log, run)
 * inside its temp dir, listening on 127.0.0.1. Readers are handed to nnrpd on
 * MODE READER; /etc/news/readers.conf (copied) lets localhost read and post.
 */
export async function startInnd(options: InndOptions = {}): Promise<Innd> {
  const groups = options.groups ?? ['local.test'];
  const dir = await makeDir('reflector-innd-');
  try {
    const port = await freePort();
    const sub = (...parts: string[]): string => path.join(dir, ...parts);
    for (const part of ['etc', 'db', 'log', 'run', 'http', 'spool/articles', 'spool/overview', 'spool/incoming/tmp', 'spool/outgoing', 'spool/archive']) {
      await mkdir(sub(part), { recursive: true });
    }
    await runOk('cp', ['-a', '/etc/news/.', sub('etc')]);
    const system = await readFile('/etc/news/inn.conf', 'utf8');
    const kept = system.split('\n').filter((line) => !RELOCATED_KEYS.test(line));
    const innconf = sub('etc', 'inn.conf');
    await writeFile(
      innconf,
      [
        ...kept,
        'domain:        localdomain',
        'pathhost:      reflector-test.localdomain',
        'pgpverify:     false',
        'doinnwatch:    false',
        `port:          ${port}`,
        `nnrpdpostport: ${port}`,
        'bindaddress:   127.0.0.1',
        'pathnews:      /usr/lib/news',
        `pathbin:       ${INN_BIN}`,
        `pathcontrol:   ${INN_BIN}/control`,
        `pathfilter:    ${sub('etc', 'filter')}`,
        `pathetc:       ${sub('etc')}`,
        `pathdb:        ${sub('db')}`,
        `pathrun:       ${sub('run')}`,
        `pathlog:       ${sub('log')}`,
        `pathhttp:      ${sub('http')}`,
        `pathspool:     ${sub('spool')}`,
        `patharticles:  ${sub('spool', 'articles')}`,
        `pathoverview:  ${sub('spool', 'overview')}`,
        `pathincoming:  ${sub('spool', 'incoming')}`,
        `pathtmp:       ${sub('spool', 'incoming', 'tmp')}`,
        `pathoutgoing:  ${sub('spool', 'outgoing')}`,
        `patharchive:   ${sub('spool', 'archive')}`,
        '',
      ].join('\n'),
    );
    const active = ['control 0000000000 0000000001 n', 'control.cancel 0000000000 0000000001 n', 'junk 0000000000 0000000001 n'];
    for (const group of groups) active.push(`${group} 0000000000 0000000001 y`);
    await writeFile(sub('db', 'active'), `${active.join('\n')}\n`);
    await writeFile(sub('db', 'newsgroups'), groups.map((group) => `${group}\tReflector system test group.\n`).join(''));
    await writeFile(sub('db', 'active.times'), '');
    await writeFile(sub('db', 'history'), '');
    await runOk('chown', ['-R', 'news:news', ...['etc', 'db', 'log', 'run', 'http', 'spool'].map((part) => sub(part))]);
    const env = { ...process.env, INNCONF: innconf };
    await runOk('setpriv', [...AS_NEWS, `${INN_BIN}/innconfval`, '-C'], { env });
    await runOk('setpriv', [...AS_NEWS, `${INN_BIN}/makedbz`, '-i', '-o'], { env, cwd: sub('db') });

    const child = new ServiceProcess({
      name: 'innd',
      command: 'setpriv', // execs innd in the same PID
      args: [...AS_NEWS, `${INN_BIN}/innd`, '-d', '-P', String(port)],
      env,
    });
    const server = new InndInstance(dir, { host: '127.0.0.1', port }, groups, innconf, child);
    try {
      await waitForPort(port, child);
    } catch (error) {
      const logs = await server.logs();
      await server.stop();
      throw new Error(`${(error as Error).message}\n--- innd logs ---\n${logs}`);
    }
    return server;
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

class InndInstance implements Innd {
  private stopping: Promise<void> | undefined;
  constructor(
    readonly dir: string,
    readonly target: ServiceTarget,
    readonly groups: readonly string[],
    readonly innconf: string,
    readonly process: ServiceProcess,
  ) {}

  async ctlinnd(args: readonly string[]): Promise<string> {
    const { stdout } = await runOk('setpriv', [...AS_NEWS, `${INN_BIN}/ctlinnd`, '-t', '10', ...args], {
      env: { ...process.env, INNCONF: this.innconf },
      timeoutMs: 20_000,
    });
    return stdout;
  }

  async logs(): Promise<string> {
    const parts = [this.process.output()];
    try {
      for (const name of (await readdir(path.join(this.dir, 'log'))).sort()) {
        const text = await readIfThere(path.join(this.dir, 'log', name));
        if (text !== '') parts.push(`--- log/${name} ---\n${text.slice(-4_000)}`);
      }
    } catch {
      // the temp dir is gone (stopped): the process output is all there is
    }
    return parts.join('\n');
  }

  stop(): Promise<void> {
    // innd does not act on SIGTERM promptly (still running 20 s later): shut it
    // down through its control socket in our run/ dir, then wait for the PID;
    // SIGKILL that PID only if it outlives the shutdown.
    this.stopping ??= (async () => {
      try {
        if (this.process.running) {
          await run('setpriv', [...AS_NEWS, `${INN_BIN}/ctlinnd`, '-t', '10', 'shutdown', 'reflector-test-done'], {
            env: { ...process.env, INNCONF: this.innconf },
            timeoutMs: 20_000,
          });
          await this.process.waitForExit(10_000);
        }
      } finally {
        await rm(this.dir, { recursive: true, force: true });
      }
    })();
    return this.stopping;
  }
}
