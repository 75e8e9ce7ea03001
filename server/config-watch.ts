/**
 * Reloading the server's config file: on SIGHUP (the CLI calls reload()) and,
 * with `watch: true`, whenever the config file or a client key file it names
 * changes. A file that fails validation is rejected with its one-sentence
 * error logged, and the config in force stays; a good one swaps clients and
 * services in through ReflectorServer.reload(), which closes the sessions of
 * removed keys and resets streams to services a client lost.
 *
 * The watcher watches the directories that hold the files rather than the
 * files themselves: editors and config management replace a file by renaming
 * a new one over it, and Kubernetes swaps a ConfigMap's `..data` symlink;
 * a watch on the old inode would see neither. Events are debounced, and a
 * reload runs only when a watched file's content really changed.
 */
import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { loadServerConfig, type ServerConfig, type ServerConfigDefaults } from '../shared/config-schema.js';
import type { Logger } from '../shared/logger.js';

/** What a reload needs from the server. */
export interface Reloadable {
  reload(config: ServerConfig): void;
}

export interface ConfigReloaderOptions {
  /** The config file, as loadServerConfig() read it at start. */
  configPath: string;
  /** The config in force at start. */
  initial: ServerConfig;
  logger: Logger;
  /** The defaults the config was first loaded with (so an unchanged file reads the same). */
  defaults?: ServerConfigDefaults;
  /** Called after every attempt with its result and, on success, the new config. */
  onResult?: (ok: boolean, config?: ServerConfig) => void;
  /** Quiet period after the last file event before the files are compared, ms. */
  debounceMs?: number;
}

/** Settings that only take effect at start: a reload that changes them says so. */
const RESTART_ONLY: ReadonlyArray<keyof ServerConfig> = ['listen', 'path', 'hostKey', 'tls', 'trustProxy', 'aead', 'limits', 'replica', 'log', 'admin', 'watch'];

export class ConfigReloader {
  private current: ServerConfig;
  private running: Promise<boolean> | undefined;
  private again = false;
  private watchers = new Map<string, FSWatcher>();
  private timer: NodeJS.Timeout | undefined;
  private fingerprint: string | undefined;
  private closed = false;

  constructor(
    private readonly server: Reloadable,
    private readonly options: ConfigReloaderOptions,
  ) {
    this.current = options.initial;
  }

  /** The config in force (the last one that loaded). */
  get config(): ServerConfig {
    return this.current;
  }

  /**
   * Re-reads the config file and applies its clients and services. Resolves
   * true when the new config is in force, false when it was rejected (logged).
   * Calls that arrive while one runs are folded into one more run.
   */
  reload(reason: string): Promise<boolean> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.runReload(reason).finally(() => {
      this.running = undefined;
      if (this.again && !this.closed) {
        this.again = false;
        void this.reload(reason);
      }
    });
    return this.running;
  }

  /** Starts watching the config file and the client key files it names. */
  async watch(): Promise<void> {
    this.fingerprint = await this.fingerprintFiles();
    this.rewatch();
    this.options.logger.info(
      { event: 'config.watching', files: this.watchedFiles() },
      `watching ${this.watchedFiles().length} file(s) for changes`,
    );
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    for (const watcher of this.watchers.values()) watcher.close();
    this.watchers.clear();
  }

  private async runReload(reason: string): Promise<boolean> {
    const { logger, configPath } = this.options;
    let next: ServerConfig;
    try {
      next = await loadServerConfig(configPath, this.options.defaults);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      logger.error(
        { event: 'config.reload_failed', trigger: reason, file: configPath, err: message },
        `reload failed, keeping the current configuration: ${message}`,
      );
      this.options.onResult?.(false);
      return false;
    }
    const ignored = RESTART_ONLY.filter((key) => JSON.stringify(next[key]) !== JSON.stringify(this.current[key]));
    if (ignored.length > 0) {
      logger.warn(
        { event: 'config.restart_needed', keys: ignored },
        `reload applies clients and services only; restart to apply: ${ignored.join(', ')}`,
      );
    }
    this.server.reload(next);
    this.current = next;
    // ReflectorServer.reload() logs the audit line (config.reloaded) itself.
    logger.debug({ event: 'config.reload', trigger: reason, file: configPath }, `reloaded ${configPath} (${reason})`);
    this.options.onResult?.(true, next);
    return true;
  }

  private watchedFiles(): string[] {
    const files = [this.options.configPath, ...this.current.clients.flatMap((client) => (client.keyFile ? [client.keyFile] : []))];
    return [...new Set(files.map((file) => path.resolve(file)))];
  }

  /** Watches the directory of every watched file; directories no longer needed are dropped. */
  private rewatch(): void {
    const dirs = new Set(this.watchedFiles().map((file) => path.dirname(file)));
    for (const [dir, watcher] of this.watchers) {
      if (!dirs.has(dir)) {
        watcher.close();
        this.watchers.delete(dir);
      }
    }
    for (const dir of dirs) {
      if (this.watchers.has(dir)) continue;
      try {
        const watcher = watch(dir, { persistent: false }, () => this.schedule());
        watcher.on('error', (error) => {
          this.options.logger.warn({ event: 'config.watch_error', dir, err: error.message }, `cannot watch ${dir}: ${error.message}`);
          watcher.close();
          this.watchers.delete(dir);
        });
        this.watchers.set(dir, watcher);
      } catch (error) {
        const message = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
        this.options.logger.warn({ event: 'config.watch_error', dir, err: message }, `cannot watch ${dir}: ${message}`);
      }
    }
  }

  private schedule(): void {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.onQuiet(), this.options.debounceMs ?? 250);
    this.timer.unref();
  }

  /** After the burst of events: reload if a watched file's content differs from the last one seen. */
  private async onQuiet(): Promise<void> {
    if (this.closed) return;
    const fingerprint = await this.fingerprintFiles();
    if (fingerprint === this.fingerprint || this.closed) return;
    this.fingerprint = fingerprint;
    await this.reload('file change');
    if (this.closed) return;
    // The new config may name other key files; their content is part of the next comparison.
    this.fingerprint = await this.fingerprintFiles();
    this.rewatch();
  }

  private async fingerprintFiles(): Promise<string> {
    const hash = createHash('sha256');
    for (const file of this.watchedFiles()) {
      hash.update(file).update('\0');
      try {
        hash.update(await readFile(file));
      } catch (error) {
        // A file that is missing or unreadable right now is a state too; the reload reports it.
        hash.update(`<${(error as NodeJS.ErrnoException).code ?? 'unreadable'}>`);
      }
      hash.update('\0');
    }
    return hash.digest('hex');
  }
}
