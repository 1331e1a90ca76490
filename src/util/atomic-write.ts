import { randomBytes } from 'node:crypto';
import { closeSync, constants, fstatSync, fsyncSync, openSync, readSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/**
 * Replaces a file so that a crash at any moment leaves either the old or
 * the new content: write a temporary file completely (a write may take
 * fewer bytes than asked: the rest is written until done or an error),
 * flush it, read it back, rename it over the target, flush the directory.
 * The temporary file is created, never reused (O_EXCL) and never reached
 * through a symbolic link (O_NOFOLLOW), under a name nobody can predict.
 */
export function writeFileAtomic(path: string, content: string, mode = 0o600): void {
  const bytes = Buffer.from(content, 'utf8');
  const temporary = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(temporary, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  try {
    writeFully(fd, bytes);
    fsyncSync(fd);
    verify(fd, bytes, temporary);
    closeSync(fd);
  } catch (error) {
    closeSync(fd);
    rmSync(temporary, { force: true });
    throw error;
  }
  try {
    renameSync(temporary, path);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw error;
  }
  const dir = openSync(dirname(path), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

function writeFully(fd: number, bytes: Buffer): void {
  for (let offset = 0; offset < bytes.length;) {
    const written = writeSync(fd, bytes, offset, bytes.length - offset, offset);
    if (written <= 0) throw Object.assign(new Error(`short write: ${offset} of ${bytes.length} bytes written`), { code: 'EIO' });
    offset += written;
  }
}

/** What the file holds now is what was meant: a file system that lost bytes fails here, before the rename. */
function verify(fd: number, bytes: Buffer, path: string): void {
  const size = fstatSync(fd).size;
  const back = Buffer.alloc(bytes.length);
  let read = 0;
  while (read < back.length) {
    const n = readSync(fd, back, read, back.length - read, read);
    if (n === 0) break;
    read += n;
  }
  if (size !== bytes.length || read !== bytes.length || !back.equals(bytes)) {
    throw Object.assign(new Error(`${path} does not read back as written (${read} of ${bytes.length} bytes match)`), { code: 'EIO' });
  }
}

/**
 * A directory that holds state must be the daemon's alone: owned by the
 * user it runs as (root) and not writable by group or others, who could
 * otherwise replace the files in it. The reason it is not, in one line;
 * undefined when it is (or does not exist yet).
 */
export function privateDirectoryProblem(dir: string): string | undefined {
  let stat;
  try {
    stat = statSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  if (!stat.isDirectory()) return `${dir} is not a directory`;
  const uid = process.geteuid?.() ?? stat.uid;
  if (stat.uid !== uid) return `${dir} is owned by uid ${stat.uid}, not by uid ${uid} that the daemon runs as`;
  if (stat.mode & 0o022) {
    return `${dir} is writable by ${stat.mode & 0o020 ? 'its group' : 'others'} (mode ${(stat.mode & 0o7777).toString(8).padStart(4, '0')}): chmod go-w ${dir}`;
  }
  return undefined;
}
