/** Finding the external programs a path needs; the bench installs nothing. */
import { accessSync, constants } from 'node:fs';
import path from 'node:path';

/** Absolute path of `name` on PATH (plus the sbin directories root's PATH may lack), or undefined. */
export function findProgram(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    if (dir === '') continue;
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here; try the next directory
    }
  }
  return undefined;
}

/** "skipped: <package> not installed" for the first missing program, else undefined. */
export function missing(programs: Array<{ program: string; pkg: string }>): string | undefined {
  for (const { program, pkg } of programs) {
    if (findProgram(program) === undefined) return `skipped: ${pkg} not installed (no ${program} on PATH)`;
  }
  return undefined;
}
