/**
 * Certificates for the system tests, made with the openssl command: a test CA
 * and a server certificate it signed (what `--ca FILE` is for), and a
 * self-signed certificate (what `--insecure` or a failed check is about).
 * P-256 keys: quick to make. Valid two days.
 */
import { chmod, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { runOk } from './child-process.js';
import { program, type Requirement } from './requirements.js';

export const OPENSSL_REQUIREMENTS: readonly Requirement[] = [program('openssl', 'openssl')];

export interface TestCa {
  /** The CA certificate (PEM): pass it as --ca. */
  caCert: string;
  caKey: string;
  /** A server certificate signed by the CA for `names`, and its key. */
  cert: string;
  key: string;
  /** A self-signed certificate for the same names, and its key (no CA vouches for it). */
  selfSignedCert: string;
  selfSignedKey: string;
}

export interface TestCaOptions {
  /** Subject alternative names; default 127.0.0.1 and localhost. IP addresses become IP: entries. */
  names?: readonly string[];
}

const KEY_ARGS = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

function subjectAltName(names: readonly string[]): string {
  return names.map((name) => (/^[\d.]+$|:/.test(name) ? `IP:${name}` : `DNS:${name}`)).join(',');
}

/** Writes a CA, a server certificate it signed and a self-signed certificate into `dir`. */
export async function makeTestCa(dir: string, options: TestCaOptions = {}): Promise<TestCa> {
  const names = options.names ?? ['127.0.0.1', 'localhost'];
  const file = (name: string) => path.join(dir, name);
  const ca: TestCa = {
    caCert: file('test-ca.pem'),
    caKey: file('test-ca.key'),
    cert: file('server.pem'),
    key: file('server.key'),
    selfSignedCert: file('self-signed.pem'),
    selfSignedKey: file('self-signed.key'),
  };
  const san = subjectAltName(names);
  await runOk('openssl', [
    'req', '-x509', ...KEY_ARGS, '-days', '2', '-subj', '/CN=Reflector Test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-keyout', ca.caKey, '-out', ca.caCert,
  ]);
  const csr = file('server.csr');
  await runOk('openssl', ['req', ...KEY_ARGS, '-subj', `/CN=${names[0]}`, '-keyout', ca.key, '-out', csr]);
  const extensions = file('server.ext');
  await writeFile(
    extensions,
    `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n`,
  );
  await runOk('openssl', [
    'x509', '-req', '-in', csr, '-CA', ca.caCert, '-CAkey', ca.caKey, '-CAcreateserial',
    '-days', '2', '-extfile', extensions, '-out', ca.cert,
  ]);
  await runOk('openssl', [
    'req', '-x509', ...KEY_ARGS, '-days', '2', '-subj', `/CN=${names[0]}`, '-addext', `subjectAltName=${san}`,
    '-keyout', ca.selfSignedKey, '-out', ca.selfSignedCert,
  ]);
  // nginx reads keys as root before it drops privileges; other daemons may not.
  for (const key of [ca.key, ca.selfSignedKey]) await chmod(key, 0o644);
  return ca;
}
