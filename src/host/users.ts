/**
 * The host's users, for the uid a VM's QEMU runs as: looking one up, making and deleting the
 * system user of a VM (useradd/userdel, an argv, never a shell), and whether a uid can open a
 * path, judged from the modes on the way there (ACLs are not read).
 */
import fs from 'node:fs';
import path from 'node:path';
import { UsageError } from '../errors.js';
import { runProgram, HostCommandError } from './exec.js';

export interface HostUser {
  name: string;
  uid: number;
  gid: number;
  /** The GECOS field: mq-hotplug's users say there which VM they are for. */
  comment: string;
}

/** What a process runs with: its uid, gid and supplementary groups. */
export interface Credentials {
  uid: number;
  gid: number;
  groups: readonly number[];
}

export const ROOT: Credentials = { uid: 0, gid: 0, groups: [] };

/** A user from /etc/passwd, else from NSS (getent), or undefined. */
export async function findUser(name: string): Promise<HostUser | undefined> {
  const line =
    readPasswd().find((l) => l.startsWith(`${name}:`)) ??
    (await runProgram(['getent', 'passwd', name]).catch(() => '')).trim();
  const [user, , uid, gid, comment] = line.split(':');
  if (user !== name || uid === undefined || gid === undefined) return undefined;
  return { name, uid: Number(uid), gid: Number(gid), comment: comment ?? '' };
}

function readPasswd(): string[] {
  try {
    return fs.readFileSync('/etc/passwd', 'utf8').split('\n');
  } catch {
    return [];
  }
}

/** The name of a group's gid, from /etc/group (for a message), or the number. */
export function groupName(gid: number): string {
  try {
    const line = fs
      .readFileSync('/etc/group', 'utf8')
      .split('\n')
      .find((l) => l.split(':')[2] === String(gid));
    return line?.split(':')[0] ?? String(gid);
  } catch {
    return String(gid);
  }
}

/** useradd and userdel answer 10 while another process holds /etc/passwd's lock: they are tried again. */
const PASSWD_BUSY = /cannot lock|try again later/i;

async function retryBusy(argv: string[]): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await runProgram(argv);
      return;
    } catch (e) {
      if (!(e instanceof HostCommandError && PASSWD_BUSY.test(e.detail)) || attempt >= 50) throw e;
      await new Promise((r) => setTimeout(r, 20 + attempt * 10));
    }
  }
}

/** A system user with its own group, no home and no login shell. */
export async function makeSystemUser(name: string, comment: string): Promise<HostUser> {
  if (name.length > 32) throw new UsageError(`user name '${name}' is longer than 32 characters`);
  await retryBusy([
    'useradd',
    ...['--system', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin'],
    ...['--user-group', '--comment', comment, name],
  ]);
  const user = await findUser(name);
  if (!user) throw new Error(`useradd made user '${name}', but it cannot be found`);
  return user;
}

/** Deletes a user (and its own group, as useradd --user-group made it). */
export async function deleteSystemUser(name: string): Promise<void> {
  await retryBusy(['userdel', name]);
}

export type Access = 'r' | 'rw' | 'traverse';

/**
 * Why `who` cannot open `file` for `access`, or undefined when it can: every directory on the way
 * must let it through (x), and the file give it the access (r, w). Root can. Judged from modes
 * and owners; a path that does not exist says so.
 */
export function whyCannotOpen(who: Credentials, file: string, access: Access): string | undefined {
  if (who.uid === 0) return undefined;
  const abs = path.resolve(file);
  const dirs: string[] = [];
  for (let d = path.dirname(abs); ; d = path.dirname(d)) {
    dirs.unshift(d);
    if (d === '/') break;
  }
  for (const dir of access === 'traverse' ? [...dirs, abs] : dirs) {
    const st = statOrUndefined(dir);
    if (!st) return `${dir} does not exist`;
    if (!allows(who, st, 0o1)) return `directory ${dir} does not let it through (${describe(st)})`;
  }
  if (access === 'traverse') return undefined;
  const st = statOrUndefined(abs);
  if (!st) return `${abs} does not exist`;
  const bits = access === 'r' ? 0o4 : 0o6;
  return allows(who, st, bits) ? undefined : `${describe(st)}`;
}

function statOrUndefined(p: string): fs.Stats | undefined {
  try {
    return fs.statSync(p);
  } catch {
    return undefined;
  }
}

/** Whether the mode's class that applies to `who` (owner, group, others) has all of `bits`. */
function allows(who: Credentials, st: fs.Stats, bits: number): boolean {
  const shift = st.uid === who.uid ? 6 : st.gid === who.gid || who.groups.includes(st.gid) ? 3 : 0;
  return ((st.mode >> shift) & bits) === bits;
}

function describe(st: fs.Stats): string {
  return `mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}, owner uid ${st.uid}, group ${groupName(st.gid)}`;
}
