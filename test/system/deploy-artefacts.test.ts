/**
 * The deployment artefacts are checked where they cannot be run: the
 * Dockerfile by a linter (dockerfile-utils, the VS Code Docker extension's
 * validator) and by its structure against the repo and .dockerignore; the
 * systemd unit by `systemd-analyze verify` and `security --offline`; the
 * Kubernetes manifests by parsing them as kubectl does (YAML 1.1), checking
 * that they agree with each other, and loading the ConfigMap's server.yaml
 * with the gateway's own config parser.
 */
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { validate } from 'dockerfile-utils';
import { parseAllDocuments } from 'yaml';
import { Defaults } from '../../shared/constants.js';
import { loadServerConfig } from '../../shared/config-schema.js';
import { run } from './harness/child-process.js';
import { dockerignore, execForm, parseCopy, parseStages, type Stage } from './harness/dockerfile.js';
import { program } from './harness/requirements.js';
import { REPO_ROOT } from './harness/reflector-processes.js';

const repo = (...parts: string[]): string => path.join(REPO_ROOT, ...parts);
const read = (...parts: string[]): Promise<string> => readFile(repo(...parts), 'utf8');

function only<T>(items: readonly T[], what: string): T {
  assert.equal(items.length, 1, `exactly one ${what}, found ${items.length}`);
  return items[0]!;
}

function instructionsOf(stage: Stage, keyword: string): string[] {
  return stage.instructions.filter((instruction) => instruction.keyword === keyword).map((instruction) => instruction.args);
}

/** The numeric uid the image runs as (USER 10001 or 10001:10001). */
async function imageUid(): Promise<number> {
  const stages = parseStages(await read('Dockerfile'));
  const user = instructionsOf(stages[stages.length - 1]!, 'USER').at(-1) ?? '';
  return Number(user.split(':')[0]);
}

describe('Dockerfile', () => {
  let text: string;
  let stages: Stage[];
  let runtime: Stage;
  before(async () => {
    text = await read('Dockerfile');
    stages = parseStages(text);
    runtime = stages[stages.length - 1]!;
  });

  it('passes the dockerfile-utils linter with no errors or warnings', () => {
    const diagnostics = validate(text).map((d) => `line ${d.range.start.line + 1}: ${d.message}`);
    assert.deepEqual(diagnostics, []);
  });

  it('(the linter does flag a broken Dockerfile, so a clean result means something)', () => {
    const broken = 'FROM node:20 AS a\nHEALTHCHECK --interval=soon CMD true\nEXPOSE port\nCOPY --frm=a x y\n';
    assert.ok(validate(broken).length >= 3, 'the linter found the planted mistakes');
  });

  it('is multi-stage: named build stages, and every COPY --from names an earlier one', () => {
    assert.ok(stages.length >= 2, `${stages.length} stage(s)`);
    const names: string[] = [];
    for (const stage of stages) {
      assert.ok(stage.name, `FROM ${stage.image} has an AS name`);
      for (const args of instructionsOf(stage, 'COPY')) {
        const from = parseCopy(args).flags.from;
        if (from !== undefined) assert.ok(names.includes(from), `COPY --from=${from} in stage ${stage.name} names an earlier stage`);
      }
      names.push(stage.name);
    }
    assert.ok(instructionsOf(stages.find((stage) => stage.name === 'build')!, 'RUN').some((args) => /npm run build/.test(args)), 'the build stage compiles');
    assert.ok(!instructionsOf(runtime, 'RUN').some((args) => /npm (ci|install)\b/.test(args)), 'the runtime stage installs nothing itself');
  });

  it('runs as a numeric non-root user (so Kubernetes runAsNonRoot can verify it)', async () => {
    const user = instructionsOf(runtime, 'USER').at(-1);
    assert.match(user ?? '', /^\d+(:\d+)?$/, `USER ${user}`);
    assert.notEqual(await imageUid(), 0);
  });

  it('has one HEALTHCHECK that probes /healthz on the exposed port, in exec form', () => {
    const healthcheck = only(instructionsOf(runtime, 'HEALTHCHECK'), 'HEALTHCHECK');
    const command = execForm(healthcheck.replace(/^(--\S+\s+)*CMD\s+/, ''));
    assert.ok(command, `exec form: ${healthcheck}`);
    const env = instructionsOf(runtime, 'ENV').join(' ');
    const url = /REFLECTOR_HEALTHCHECK_URL=(\S+)/.exec(env)?.[1] ?? '';
    assert.ok(command.join(' ').includes('REFLECTOR_HEALTHCHECK_URL'), 'the check reads REFLECTOR_HEALTHCHECK_URL');
    assert.match(url, /^http:\/\/127\.0\.0\.1:(\d+)\/healthz$/);
    const exposed = only(instructionsOf(runtime, 'EXPOSE'), 'EXPOSE');
    assert.equal(new URL(url).port, exposed.split('/')[0]);
  });

  it('starts `reflector server --config` from the package bin, stops with SIGTERM', async () => {
    const pkg = JSON.parse(await read('package.json')) as { bin: Record<string, string> };
    const entrypoint = execForm(only(instructionsOf(runtime, 'ENTRYPOINT'), 'ENTRYPOINT')) ?? [];
    assert.deepEqual(entrypoint, ['node', `/app/${pkg.bin.reflector}`]);
    const workdir = instructionsOf(runtime, 'WORKDIR').at(-1);
    assert.equal(workdir, '/app');
    const cmd = execForm(only(instructionsOf(runtime, 'CMD'), 'CMD')) ?? [];
    assert.deepEqual(cmd.slice(0, 2), ['server', '--config']);
    assert.equal(only(instructionsOf(runtime, 'STOPSIGNAL'), 'STOPSIGNAL'), 'SIGTERM');
  });

  it('copies only files that exist in the repo and that .dockerignore lets into the context', async () => {
    const ignored = dockerignore(await read('.dockerignore'));
    for (const stage of stages) {
      for (const args of instructionsOf(stage, 'COPY')) {
        const copy = parseCopy(args);
        if (copy.flags.from !== undefined) continue;
        for (const source of copy.sources) {
          assert.ok(existsSync(repo(source)), `COPY ${source}: exists`);
          assert.ok(!ignored(source), `COPY ${source}: not excluded by .dockerignore`);
        }
      }
    }
  });
});

describe('.dockerignore', () => {
  it('keeps keys, local state, build output, tests and git out of the build context', async () => {
    const ignored = dockerignore(await read('.dockerignore'));
    for (const file of ['node_modules/ws/package.json', 'dist/bin/reflector.js', '.git/HEAD', '.reflector/host.jwk', 'deploy/host.jwk', 'shared/oops.jwk', 'alice.jwk.pub', 'test/system/smtp-through-tunnel.test.ts', 'tls/server.key']) {
      assert.ok(ignored(file), `${file} is excluded`);
    }
    for (const file of ['package.json', 'package-lock.json', 'shared/frames.ts', 'bin/reflector.ts', 'index.ts', 'tsconfig.build.json']) {
      assert.ok(!ignored(file), `${file} is in the context`);
    }
  });
});

// ---------------------------------------------------------------- systemd

const SYSTEMD_ANALYZE = program('systemd-analyze', 'systemd');
const UNIT = repo('deploy', 'systemd', 'reflector.service');

/** [Section] → Key → values (repeated keys keep every value, in order). */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const section = /^\[(.+)\]$/.exec(line);
    if (section) {
      current = new Map();
      sections.set(section[1]!, current);
      continue;
    }
    const eq = line.indexOf('=');
    assert.ok(current && eq > 0, `a key=value line inside a section: ${line}`);
    const key = line.slice(0, eq).trim();
    current.set(key, [...(current.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  return sections;
}

/** systemd time span ("45s", "1min 30s", "45") in ms. */
function timespanMs(text: string): number {
  const units: Record<string, number> = { ms: 1, s: 1000, sec: 1000, m: 60_000, min: 60_000, h: 3_600_000 };
  let total = 0;
  for (const [, value, unit] of text.matchAll(/(\d+)\s*([a-z]*)/g)) total += Number(value) * (units[unit || 's'] ?? NaN);
  return total;
}

describe('deploy/systemd/reflector.service', () => {
  let service: Map<string, string[]>;
  const one = (key: string): string => only(service.get(key) ?? [], `${key}= line`);
  before(async () => {
    const unit = parseUnit(await readFile(UNIT, 'utf8'));
    service = unit.get('Service')!;
    assert.ok(service, '[Service] section');
    assert.equal(unit.get('Install')?.get('WantedBy')?.[0], 'multi-user.target');
  });

  it('runs `reflector server --config` under its own unprivileged user', () => {
    assert.match(one('ExecStart'), /^\/\S+\/reflector server --config \/etc\/reflector\/server\.yaml$/);
    assert.ok(service.get('DynamicUser')?.[0] === 'yes' || (service.get('User')?.[0] ?? 'root') !== 'root', 'DynamicUser=yes or a User= other than root');
  });

  it('is hardened: no new privileges, read-only system and config, no capabilities', () => {
    assert.equal(one('NoNewPrivileges'), 'yes');
    assert.equal(one('ProtectSystem'), 'strict');
    assert.ok((service.get('ReadOnlyPaths') ?? []).some((value) => value.split(/\s+/).includes('/etc/reflector')), 'ReadOnlyPaths=/etc/reflector');
    assert.equal(one('CapabilityBoundingSet'), '');
    assert.equal(one('PrivateTmp'), 'yes');
    assert.equal(one('ProtectHome'), 'yes');
  });

  it('reloads with SIGHUP, restarts on failure, and gives the drain time to finish before SIGKILL', () => {
    assert.match(one('ExecReload'), /^\/\S*kill -HUP \$MAINPID$/);
    assert.equal(one('Restart'), 'on-failure');
    assert.equal(one('KillSignal'), 'SIGTERM');
    const stopMs = timespanMs(one('TimeoutStopSec'));
    assert.ok(stopMs > Defaults.drainTimeoutMs, `TimeoutStopSec ${stopMs} ms > drainTimeoutMs ${Defaults.drainTimeoutMs} ms`);
  });

  describe('systemd-analyze', { skip: SYSTEMD_ANALYZE.present() ? false : `systemd-analyze not found (${SYSTEMD_ANALYZE.remedy})` }, () => {
    let dir: string;
    let unitCopy: string;
    before(async () => {
      // verify checks that ExecStart's program exists; on a test machine
      // /usr/local/bin/reflector usually does not, so a copy of the unit
      // points at a stub with the same name. Nothing else is changed.
      dir = await mkdtemp(path.join(os.tmpdir(), 'reflector-unit-'));
      const stub = path.join(dir, 'reflector');
      await writeFile(stub, '#!/bin/sh\nexit 0\n');
      await chmod(stub, 0o755);
      const text = await readFile(UNIT, 'utf8');
      unitCopy = path.join(dir, 'reflector.service');
      await writeFile(unitCopy, text.replace(/^ExecStart=\S+\/reflector /m, `ExecStart=${stub} `));
    });
    after(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('`systemd-analyze verify` accepts the unit', async () => {
      const result = await run('systemd-analyze', ['verify', '--man=no', unitCopy]);
      assert.equal(result.code, 0, result.stderr);
      assert.doesNotMatch(result.stderr, /reflector\.service/, 'no complaint about the unit');
    });

    it('`systemd-analyze security --offline` rates its exposure OK (below 3.0)', async (t) => {
      const result = await run('systemd-analyze', ['security', '--offline=true', unitCopy]);
      if (result.code !== 0 && /offline/.test(result.stderr)) return t.skip(`this systemd-analyze has no --offline: ${result.stderr.trim()}`);
      const level = /Overall exposure level for reflector\.service: ([\d.]+)/.exec(result.stdout)?.[1];
      assert.ok(level !== undefined, result.stdout + result.stderr);
      assert.ok(Number(level) < 3, `exposure ${level}`);
    });

    it('the sysusers.d file declares the "reflector" user (systemd-sysusers --dry-run in a scratch root)', async (t) => {
      if (!program('systemd-sysusers', 'systemd').present()) return t.skip('systemd-sysusers not found (apt-get install systemd)');
      const root = await mkdtemp(path.join(os.tmpdir(), 'reflector-sysusers-'));
      try {
        const result = await run('systemd-sysusers', ['--dry-run', `--root=${root}`, repo('deploy', 'systemd', 'reflector-sysusers.conf')]);
        assert.equal(result.code, 0, result.stderr);
        assert.match(result.stdout + result.stderr, /Creating user '?reflector'?/);
      } finally {
        await rm(root, { recursive: true, force: true });
      }
    });
  });
});

// ---------------------------------------------------------------- Kubernetes

type Manifest = Record<string, any>; // free-form YAML whose shape the tests check
const K8S_DIR = repo('deploy', 'kubernetes');

describe('deploy/kubernetes', () => {
  const manifests: Manifest[] = [];
  const files: string[] = [];
  const byKind = (kind: string): Manifest => only(manifests.filter((m) => m.kind === kind), `${kind}`);
  let deployment: Manifest;
  let pod: Manifest;
  let container: Manifest;
  before(async () => {
    for (const name of (await readdir(K8S_DIR)).sort()) {
      if (!name.endsWith('.yaml')) continue;
      files.push(name);
      // kubectl reads YAML 1.1 (0400 is octal there): parse the same way.
      for (const doc of parseAllDocuments(await readFile(path.join(K8S_DIR, name), 'utf8'), { version: '1.1' })) {
        assert.deepEqual([...doc.errors, ...doc.warnings].map((e) => e.message), [], `${name} parses cleanly`);
        manifests.push(doc.toJS() as Manifest);
      }
    }
    deployment = byKind('Deployment');
    pod = deployment.spec.template.spec;
    container = only(pod.containers as Manifest[], 'container');
  });

  it('parses, and every manifest names its apiVersion, kind and metadata.name', () => {
    assert.ok(manifests.length >= 6, `${manifests.length} documents`);
    for (const manifest of manifests) {
      assert.ok(manifest.apiVersion && manifest.kind, JSON.stringify(manifest).slice(0, 120));
      if (manifest.kind !== 'Kustomization') assert.ok(manifest.metadata?.name, `${manifest.kind} has a name`);
    }
    for (const kind of ['Deployment', 'Service', 'Ingress', 'ConfigMap', 'Secret']) byKind(kind);
  });

  it('kustomization.yaml lists every manifest except the placeholder Secret', () => {
    const resources = byKind('Kustomization').resources as string[];
    assert.deepEqual([...resources].sort(), files.filter((name) => !['kustomization.yaml', 'secret.yaml'].includes(name)));
  });

  it('the Deployment runs 2 replicas with /readyz readiness and /healthz liveness probes on the container port', () => {
    assert.equal(deployment.spec.replicas, 2);
    const port = only(container.ports as Manifest[], 'container port');
    assert.equal(container.readinessProbe.httpGet.path, '/readyz');
    assert.equal(container.livenessProbe.httpGet.path, '/healthz');
    for (const probe of [container.readinessProbe, container.livenessProbe]) assert.ok([port.name, port.containerPort].includes(probe.httpGet.port));
    const labels = deployment.spec.template.metadata.labels as Record<string, string>;
    for (const [key, value] of Object.entries(deployment.spec.selector.matchLabels as Record<string, string>)) assert.equal(labels[key], value, `selector ${key}`);
  });

  it('runs as the image\'s non-root uid with a read-only root filesystem and no privileges', async () => {
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.equal(pod.securityContext.runAsUser, await imageUid());
    for (const c of [...(pod.initContainers as Manifest[]), container]) {
      assert.equal(c.securityContext.allowPrivilegeEscalation, false, `${c.name}: allowPrivilegeEscalation`);
      assert.equal(c.securityContext.readOnlyRootFilesystem, true, `${c.name}: readOnlyRootFilesystem`);
      assert.deepEqual(c.securityContext.capabilities.drop, ['ALL'], `${c.name}: capabilities`);
    }
  });

  it('mounts the host-key Secret read-only with mode 0400 or 0600 and gives the gateway a 0600 copy', () => {
    const secret = byKind('Secret');
    const volumes = pod.volumes as Manifest[];
    const secretVolume = only(volumes.filter((v) => v.secret?.secretName === secret.metadata.name), 'volume for the Secret');
    assert.ok([0o400, 0o600].includes(secretVolume.secret.defaultMode), `defaultMode ${secretVolume.secret.defaultMode?.toString(8)}`);
    const mounts = [...(pod.initContainers as Manifest[]), container].flatMap((c) => c.volumeMounts as Manifest[]);
    const secretMounts = mounts.filter((m) => m.name === secretVolume.name);
    assert.ok(secretMounts.length > 0 && secretMounts.every((m) => m.readOnly === true), 'the Secret is mounted read-only');
    const install = only((pod.initContainers as Manifest[]).filter((c) => (c.command as string[])[0] === 'install'), 'install init container');
    assert.deepEqual((install.command as string[]).slice(0, 3), ['install', '-m', '0600']);
    const keyVolume = only(volumes.filter((v) => v.emptyDir?.medium === 'Memory'), 'memory-backed key volume');
    const keyMount = only((container.volumeMounts as Manifest[]).filter((m) => m.name === keyVolume.name), 'key mount in the gateway');
    assert.equal(keyMount.readOnly, true);
    assert.equal((install.command as string[])[4], path.posix.join(keyMount.mountPath, 'host.jwk'));
  });

  it('the ConfigMap\'s server.yaml loads with the gateway\'s own parser and agrees with the Deployment', async () => {
    const configMap = byKind('ConfigMap');
    const dir = await mkdtemp(path.join(os.tmpdir(), 'reflector-configmap-'));
    try {
      for (const [name, text] of Object.entries(configMap.data as Record<string, string>)) await writeFile(path.join(dir, name), text);
      const config = await loadServerConfig(path.join(dir, 'server.yaml'));
      const configMount = only((container.volumeMounts as Manifest[]).filter((m) => m.name === (pod.volumes as Manifest[]).find((v) => v.configMap?.name === configMap.metadata.name)?.name), 'config mount');
      assert.deepEqual(container.args, ['server', '--config', path.posix.join(configMount.mountPath, 'server.yaml')]);
      const keyMount = (container.volumeMounts as Manifest[]).find((m) => config.hostKey.startsWith(`${m.mountPath}/`));
      assert.ok(keyMount, `hostKey ${config.hostKey} is on a mounted volume`);
      assert.equal(config.listen.host, '0.0.0.0');
      assert.equal(config.listen.port, only(container.ports as Manifest[], 'port').containerPort);
      assert.ok(pod.terminationGracePeriodSeconds * 1000 > config.limits.drainTimeoutMs, 'the grace period outlasts the drain');
      assert.ok(config.clients.length > 0, 'at least one client');
      const ingress = byKind('Ingress');
      assert.equal(only(ingress.spec.rules[0].http.paths as Manifest[], 'ingress path').path, config.path);
      const readTimeout = Number(ingress.metadata.annotations['nginx.ingress.kubernetes.io/proxy-read-timeout']);
      assert.ok(readTimeout * 1000 > config.limits.pingIntervalMs, 'the gateway pings inside proxy-read-timeout');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('the Service selects the pods and the Ingress (ingress-nginx, WebSocket timeouts) routes to the Service', () => {
    const service = byKind('Service');
    const labels = deployment.spec.template.metadata.labels as Record<string, string>;
    for (const [key, value] of Object.entries(service.spec.selector as Record<string, string>)) assert.equal(labels[key], value, `Service selector ${key}`);
    const servicePort = only(service.spec.ports as Manifest[], 'Service port');
    const port = only(container.ports as Manifest[], 'container port');
    assert.ok([port.name, port.containerPort].includes(servicePort.targetPort), 'targetPort is the container port');
    const ingress = byKind('Ingress');
    assert.equal(ingress.spec.ingressClassName, 'nginx');
    const annotations = ingress.metadata.annotations as Record<string, string>;
    for (const key of ['proxy-read-timeout', 'proxy-send-timeout']) {
      const value = annotations[`nginx.ingress.kubernetes.io/${key}`];
      assert.match(value ?? '', /^\d+$/, `${key} is a number of seconds, quoted`);
      assert.ok(Number(value) >= 60, `${key} ${value} s`);
    }
    const backend = ingress.spec.rules[0].http.paths[0].backend.service;
    assert.equal(backend.name, service.metadata.name);
    assert.ok([servicePort.name, servicePort.port].includes(backend.port.name ?? backend.port.number), 'the Ingress uses the Service port');
    assert.ok(ingress.spec.tls?.length > 0, 'TLS at the Ingress');
  });
});

it('deploy/ files are not executable and hold no private key', async () => {
  for (const dir of ['systemd', 'kubernetes']) {
    for (const name of await readdir(repo('deploy', dir))) {
      const file = repo('deploy', dir, name);
      assert.equal(statSync(file).mode & 0o111, 0, `${file} is not executable`);
      assert.doesNotMatch(await readFile(file, 'utf8'), /"d"\s*:/, `${file} holds no private JWK`);
    }
  }
});
