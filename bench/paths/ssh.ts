/**
 * `ssh -L` through an sshd of its own on a loopback port: a throwaway host
 * key, a throwaway client key in authorized_keys, one cipher forced on the
 * client (chacha20-poly1305@openssh.com or aes128-gcm@openssh.com).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { freePort, waitForBanner } from '../lib/net.js';
import { findProgram, missing } from '../lib/programs.js';
import { run, start, type Child } from '../lib/proc.js';
import type { BenchContext, BenchPath, PathEndpoint } from './types.js';

export class SshPath implements BenchPath {
  readonly id: string;
  readonly label: string;
  private sshd: Child | undefined;
  private ssh: Child | undefined;

  constructor(private readonly cipher: 'chacha20-poly1305@openssh.com' | 'aes128-gcm@openssh.com') {
    this.id = `ssh-${cipher.replace('@openssh.com', '').replace('-poly1305', '')}`;
    this.label = `ssh -L ${cipher}`;
  }

  unavailable(): string | undefined {
    return missing([
      { program: 'sshd', pkg: 'openssh-server' },
      { program: 'ssh', pkg: 'openssh-client' },
      { program: 'ssh-keygen', pkg: 'openssh-client' },
    ]);
  }

  async setup(ctx: BenchContext): Promise<PathEndpoint> {
    const dir = path.join(ctx.dir, this.id);
    await mkdir(dir, { recursive: true });
    // sshd's privilege-separation directory; a runtime directory, not an installation.
    await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
    const keygen = findProgram('ssh-keygen')!;
    for (const name of ['host_key', 'client_key']) {
      const made = await run(keygen, ['-q', '-t', 'ed25519', '-N', '', '-C', `reflector-bench-${name}`, '-f', path.join(dir, name)]);
      if (made.code !== 0) throw new Error(`ssh-keygen failed: ${made.stderr.trim()}`);
    }
    await writeFile(path.join(dir, 'authorized_keys'), await readFile(path.join(dir, 'client_key.pub')), { mode: 0o600 });
    const sshdPort = await freePort();
    const config = path.join(dir, 'sshd_config');
    await writeFile(
      config,
      [
        `Port ${sshdPort}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${dir}/host_key`,
        `PidFile ${dir}/sshd.pid`,
        `AuthorizedKeysFile ${dir}/authorized_keys`,
        'PermitRootLogin prohibit-password',
        'PubkeyAuthentication yes',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        'StrictModes no',
        'AllowTcpForwarding yes',
        'Ciphers chacha20-poly1305@openssh.com,aes128-gcm@openssh.com',
        'Compression no',
        'UseDNS no',
        'PrintMotd no',
        'LogLevel INFO',
        '',
      ].join('\n'),
    );
    this.sshd = start(`${this.id} sshd`, findProgram('sshd')!, ['-D', '-e', '-f', config], { log: path.join(ctx.dir, `${this.id}-sshd.log`) });
    await this.sshd.waitForLog((line) => line.includes(`Server listening on 127.0.0.1 port ${sshdPort}`), 'sshd listening');
    const port = await freePort();
    this.ssh = start(
      `${this.id} ssh`,
      findProgram('ssh')!,
      [
        '-F', '/dev/null', '-N',
        '-L', `127.0.0.1:${port}:127.0.0.1:${ctx.targetPort}`,
        '-o', `Ciphers=${this.cipher}`,
        '-o', 'StrictHostKeyChecking=no',
        '-o', 'UserKnownHostsFile=/dev/null',
        '-o', 'BatchMode=yes',
        '-o', 'ExitOnForwardFailure=yes',
        '-o', 'Compression=no',
        '-o', 'LogLevel=ERROR',
        '-i', path.join(dir, 'client_key'),
        '-p', String(sshdPort),
        'root@127.0.0.1',
      ],
      { log: path.join(ctx.dir, `${this.id}-ssh.log`) },
    );
    await waitForBanner(port);
    return { port };
  }

  async teardown(): Promise<void> {
    await this.ssh?.stop();
    await this.sshd?.stop();
  }

  details(): string {
    return `ssh -N -L, Ciphers=${this.cipher} (MAC implicit), OpenSSH default key exchange, no compression`;
  }

  processes(): Array<{ role: string; pid: number }> {
    const list: Array<{ role: string; pid: number }> = [];
    if (this.ssh) list.push({ role: 'ssh', pid: this.ssh.pid });
    if (this.sshd) list.push({ role: 'sshd', pid: this.sshd.pid });
    return list;
  }
}
