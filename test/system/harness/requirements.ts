/**
 * What a system test needs from the machine (Debian packages, root), and the
 * rule for when it is missing: on a developer's machine the suite is skipped
 * with a loud message naming the package to install; under CI (CI set) it
 * fails, so a missing install step can never pass as green.
 */
import { execFileSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import { it } from 'node:test';

export interface Requirement {
  /** What is checked, e.g. "/usr/sbin/smtpd". */
  what: string;
  /** How to get it, e.g. "apt-get install opensmtpd". */
  remedy: string;
  present: () => boolean;
}

function executable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false; // absent or not executable: reported as missing
  }
}

/** An executable at an absolute path, or a command name found on PATH. */
export function program(nameOrPath: string, debianPackage: string): Requirement {
  return {
    what: nameOrPath,
    remedy: `apt-get install ${debianPackage}`,
    present: () =>
      path.isAbsolute(nameOrPath)
        ? executable(nameOrPath)
        : (process.env.PATH ?? '').split(path.delimiter).some((dir) => dir !== '' && executable(path.join(dir, nameOrPath))),
  };
}

/** Debian's own Python (its modules are not seen by a pyenv `python3` on PATH). */
export const SYSTEM_PYTHON = '/usr/bin/python3';

/** A module importable by /usr/bin/python3 (poplib, nntplib: Python ≤ 3.12). */
export function pythonModule(module: string, debianPackage = 'python3'): Requirement {
  return {
    what: `${SYSTEM_PYTHON} -c 'import ${module}'`,
    remedy: `apt-get install ${debianPackage} (nntplib was removed in Python 3.13; Debian 12 ships 3.11)`,
    present: () => {
      try {
        execFileSync(SYSTEM_PYTHON, ['-W', 'ignore', '-c', `import ${module}`], { stdio: 'ignore', timeout: 10_000 });
        return true;
      } catch {
        return false; // no python or no module: reported as missing
      }
    },
  };
}

/** The daemons start as root and drop privileges themselves (smtpd, dovecot, innd via setpriv). */
export function root(): Requirement {
  return {
    what: 'root (uid 0)',
    remedy: 'run the system tests as root, as CI does',
    present: () => process.getuid?.() === 0,
  };
}

export interface Gate {
  /** For describe(name, { skip }): a reason to skip, or false to run. */
  skip: string | false;
  /** Call in before(): under CI, throws naming everything missing; otherwise a no-op. */
  assertAvailable: () => void;
  missing: Requirement[];
}

/**
 * Checks `requirements` once. Missing ones skip the suite locally (with a
 * banner on stderr) and fail it under CI: a failing test named after the
 * suite is registered, and assertAvailable() fails the suite's before().
 */
export function gate(suite: string, requirements: readonly Requirement[]): Gate {
  const missing = requirements.filter((requirement) => !requirement.present());
  const list = missing.map((requirement) => `${requirement.what} (${requirement.remedy})`).join('; ');
  const inCi = (process.env.CI ?? '') !== '';
  if (missing.length > 0 && !inCi) {
    process.stderr.write(
      `\n${'!'.repeat(78)}\n!! SKIPPING ${suite}: missing ${list}\n!! (under CI this suite fails instead)\n${'!'.repeat(78)}\n\n`,
    );
  }
  if (missing.length > 0 && inCi) {
    // A failing test of its own, so that the runner's summary counts it as a
    // failure (a failing before() hook only cancels the suite's tests).
    it(`${suite}: its programs are installed`, () => {
      throw new Error(`${suite} cannot run under CI: missing ${list}`);
    });
  }
  return {
    skip: missing.length > 0 && !inCi ? `missing ${list}` : false,
    assertAvailable: () => {
      if (missing.length > 0) throw new Error(`${suite} cannot run: missing ${list}`);
    },
    missing,
  };
}
