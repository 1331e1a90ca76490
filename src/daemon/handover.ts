/**
 * A daemon that stops and leaves its data plane balancing for the next one
 * (`lbctl restart`, SIGTERM) says so in the state directory, so that the
 * next one's takeover is logged as routine, not as the aftermath of a crash.
 */
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic-write.js';

const FILE = 'handover.json';

export function recordHandover(stateDir: string, programId: number): void {
  writeFileAtomic(join(stateDir, FILE), `${JSON.stringify({ version: 1, programId, pid: process.pid, at: new Date().toISOString() })}\n`);
}

/** The program a previous daemon handed over, if it did; the note is used once. */
export function takeHandover(stateDir: string): { programId: number; pid: number; at: string } | undefined {
  const path = join(stateDir, FILE);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  rmSync(path, { force: true });
  try {
    const note = JSON.parse(text) as Record<string, unknown>;
    const { programId, pid, at } = note;
    if (note.version !== 1 || typeof programId !== 'number' || typeof pid !== 'number' || typeof at !== 'string') return undefined;
    return { programId, pid, at };
  } catch {
    return undefined; // a torn note only makes the takeover look like a crash's
  }
}
