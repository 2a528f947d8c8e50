/**
 * Saved definitions: what a VM is made of and the NICs it keeps, in a persistent directory apart
 * from the runtime state (which lives in /run, gone after a reboot). One file per VM:
 *
 *   <config-dir>/<vm>.json   { version, name, spec, nics: [{ id, mac, tap, queues, bridge, ... }] }
 *
 * (NICs as src/model/nic.ts has them; a file from before it, with `mtu` for the guest's, still loads.)
 *
 * The directory is 0700 and files 0600, written atomically (a temporary file, then rename), read
 * with O_NOFOLLOW; a file that is not ours, a symlink, or not valid is refused with one line naming
 * it. `start <vm>` boots a VM from its definition, with each NIC at its saved slot, MAC and tap.
 */
import fs from 'node:fs';
import path from 'node:path';
import { StateError } from '../errors.js';
import { type NicDefinition, definitionNicFromJson } from '../model/nic.js';
import type { AccelChoice } from './accel.js';
import type { VmSpec } from './spec.js';
import { ensurePrivateDir, refuseIfNotOurs, writePrivateAtomic } from './state.js';

export const DEFINITION_VERSION = 1;
export type { NicDefinition };

/** What a start asks for: the spec, with the accelerator still a choice ('auto' stays 'auto'). */
export type StartRequest = Omit<VmSpec, 'accel'> & { accel: AccelChoice };

export interface VmDefinition {
  version: number;
  name: string;
  spec: StartRequest;
  nics: NicDefinition[];
}

export function defaultConfigRoot(): string {
  return process.env.MQ_HOTPLUG_CONFIG_DIR ?? '/var/lib/mq-hotplug';
}

export class DefinitionStore {
  constructor(readonly root = defaultConfigRoot()) {}

  file(name: string): string {
    return path.join(this.root, `${name}.json`);
  }

  /** The VM's definition, or undefined when it has none; a tampered file is refused. */
  read(name: string): VmDefinition | undefined {
    const file = this.file(name);
    let fd: number;
    try {
      fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return undefined;
      if (code === 'ELOOP')
        throw new StateError(`definition ${file} is a symlink; refusing it (remove it, or restore the file)`);
      throw e;
    }
    let text: string;
    try {
      refuseIfNotOurs(fs.fstatSync(fd), `definition ${file}`);
      text = fs.readFileSync(fd, 'utf8');
    } finally {
      fs.closeSync(fd);
    }
    let def: VmDefinition;
    try {
      def = JSON.parse(text) as VmDefinition;
    } catch {
      throw new StateError(
        `definition ${file} is not valid JSON; fix it, or remove it with 'mq-hotplug undefine ${name}'`,
      );
    }
    if (def?.version !== DEFINITION_VERSION || def.name !== name || !def.spec || !Array.isArray(def.nics)) {
      throw new StateError(
        `definition ${file} is not a version ${DEFINITION_VERSION} definition of VM '${name}'; fix it, or remove it with 'mq-hotplug undefine ${name}'`,
      );
    }
    def.nics = def.nics.map(definitionNicFromJson);
    return def;
  }

  write(def: VmDefinition): void {
    ensurePrivateDir(this.root);
    writePrivateAtomic(this.file(def.name), JSON.stringify(def, null, 2) + '\n');
  }

  /** Changes a definition that exists; returns false when the VM has none. */
  update(name: string, change: (def: VmDefinition) => void): boolean {
    const def = this.read(name);
    if (!def) return false;
    change(def);
    this.write(def);
    return true;
  }

  remove(name: string): boolean {
    const file = this.file(name);
    if (!fs.existsSync(file) && !isLink(file)) return false;
    fs.rmSync(file, { force: true });
    return true;
  }

  /** Names of the defined VMs. */
  list(): string[] {
    try {
      return fs
        .readdirSync(this.root, { withFileTypes: true })
        .filter((d) => d.name.endsWith('.json') && (d.isFile() || d.isSymbolicLink()))
        .map((d) => d.name.slice(0, -'.json'.length))
        .sort();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
  }
}

function isLink(file: string): boolean {
  try {
    return fs.lstatSync(file).isSymbolicLink();
  } catch {
    return false;
  }
}
