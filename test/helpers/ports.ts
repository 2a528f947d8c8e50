/**
 * In-memory ports for unit tests of the hot-plug layer: no root, no QEMU, no ip. One `World` holds
 * a fake VM (its devices and netdevs, answering the QMP commands the layer sends) and the host's
 * links; mq-hotplug's ip lines make taps (owned, marked), netdev_add opens one as QEMU would (refused
 * where it is missing or another uid's), netdev_del leaves it. Faults are injected
 * per command (`failNext`), and a guest can be present (device_del completes with DEVICE_DELETED,
 * sent twice as QEMU does) or absent (device_del is accepted and nothing happens).
 *
 * The context is a real HotplugContext (its bridging reaction runs) and the record's lock is the
 * real in-process lock (qemu/lock.ts: FIFO, re-entrant along the holder's chain), so what the
 * layer does under the lock here is what it does in production.
 *
 *   const world = new World({ machine: 'pc' });
 *   const ctx = world.context();
 *   await addNic(ctx, { queues: 8, bridge: 'br0' });
 *   ctx.close();
 */
import { Subject } from 'rxjs';
import { HotplugContext, type HostPort, type QmpPort, type RecordPort } from '../../src/hotplug/context.js';
import type { ControllerEvent } from '../../src/hotplug/events.js';
import type { LinkInfo } from '../../src/host/ip.js';
import type { NicDefinition, NicRecord } from '../../src/model/nic.js';
import { QmpCommandError, QmpDisconnectedError } from '../../src/qmp/errors.js';
import { type QmpEvent, nowTimestamp } from '../../src/qmp/messages.js';
import { withProcessLock } from '../../src/qemu/lock.js';
import type { VmRecord } from '../../src/qemu/state.js';

let worlds = 0;

interface Device {
  driver: string;
  mac?: string;
  netdev?: string;
  mq?: boolean;
  vectors?: number;
  bus: string;
  addr?: string;
}

interface Link {
  kind: 'bridge' | 'tap' | 'veth' | 'ifb';
  /** a tap: the uid that may attach (undefined: anyone), its alias, multi_queue, attached */
  owner?: number;
  alias?: string;
  multiQueue?: boolean;
  master?: string;
  up: boolean;
  queues?: number;
  mtu?: number;
  address?: string;
}

export interface WorldOptions {
  machine?: 'pc' | 'q35';
  /** q35: spare root ports */
  rootPorts?: number;
  /** pc: slots already taken on pci.0 (besides the host bridge and ISA bridge) */
  usedSlots?: number;
  cpus?: number;
  /** A guest OS that answers device_del. */
  guest?: boolean;
  status?: string;
  /** Whether NICs are recorded (a VM of ours) or not (--qmp). */
  recorded?: boolean;
  vhostNet?: boolean;
  /** The uid the fake QEMU runs as (default 0, root). */
  qemuUid?: number;
  ipInstalled?: boolean;
  /** The VM has a saved definition. */
  defined?: boolean;
  /** QEMU's version as its greeting says (default 7.2.22). */
  qemuVersion?: { major: number; minor: number; micro: number };
}

export class World {
  readonly devices = new Map<string, Device>();
  readonly netdevs = new Map<string, { tap: string; queues: number }>();
  readonly links = new Map<string, Link>();
  readonly sent: { command: string; args?: Record<string, unknown> }[] = [];
  readonly published: ControllerEvent[] = [];
  readonly ipLines: string[][] = [];
  readonly tcLines: string[][] = [];
  /** qdiscs by device: kind and, for tbf, its rate in bytes/s */
  readonly qdiscMap = new Map<string, { kind: string; root: boolean; rate?: number }[]>();
  /** QEMU's events, as its monitor would deliver them. */
  readonly qemuEvents = new Subject<QmpEvent>();
  private readonly lockKey = `world-${++worlds}`;
  private readonly failures = new Map<string, Error>();
  private ipFailure?: Error;
  private ipFailureOnTap = false;
  private tcFailure?: Error;
  connected = true;
  qemuGone = false;
  record: VmRecord | undefined;
  /** the VM's definition's NICs, when it has one (WorldOptions.defined) */
  definition: NicDefinition[] | undefined;

  constructor(readonly options: WorldOptions = {}) {
    const { machine = 'pc', cpus = 2, recorded = true } = options;
    this.definition = options.defined ? [] : undefined;
    this.record = recorded
      ? ({
          version: 1,
          name: 'vm',
          spec: { name: 'vm', cpus, machine, hotplugSlots: options.rootPorts ?? 0 },
          nics: [],
        } as unknown as VmRecord)
      : undefined;
  }

  /** The next `command` fails with this QMP error class (or any Error). */
  failNext(command: string, error: Error | string): void {
    this.failures.set(command, typeof error === 'string' ? new QmpCommandError(command, 'GenericError', error) : error);
  }

  /** The next tc batch fails with this message. */
  failNextTc(message: string): void {
    this.tcFailure = new Error(message);
  }

  /** The next ip command fails with this message (with `makingTap`, a line that makes the tap; else any other line). */
  failNextIp(message: string, { makingTap = false } = {}): void {
    this.ipFailure = new Error(message);
    this.ipFailureOnTap = makingTap;
  }

  addLink(name: string, link: Link): void {
    this.links.set(name, link);
  }

  /** The context the layer under test gets, with its bridging reaction running (close() stops it). */
  context(qmp: QmpPort = this.qmp()): HotplugContext {
    return HotplugContext.open({
      vm: 'vm',
      qmp,
      qemuEvents$: this.qemuEvents,
      record: this.recordPort(),
      host: this.host(),
      qemuUser: { uid: this.options.qemuUid ?? 0, gid: this.options.qemuUid ?? 0, groups: [] },
      log: (e) => this.published.push(e),
    });
  }

  private emit(event: string, data: Record<string, unknown>): void {
    // as QEMU does: events come after the answer that caused them
    setImmediate(() => this.qemuEvents.next({ event, data, timestamp: nowTimestamp() }));
  }

  qmp(): QmpPort {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const world = this;
    return {
      get isReady() {
        return world.connected;
      },
      version: this.options.qemuVersion ?? { major: 7, minor: 2, micro: 22 },
      async execute<T>(command: string, args?: object): Promise<T> {
        world.sent.push({ command, args: args as Record<string, unknown> });
        if (!world.connected) throw new QmpDisconnectedError('fake', command);
        await Promise.resolve();
        const failure = world.failures.get(command);
        if (failure) {
          world.failures.delete(command);
          if (failure instanceof QmpDisconnectedError) world.connected = false;
          throw failure;
        }
        return world.answer(command, (args ?? {}) as Record<string, unknown>) as T;
      },
    };
  }

  private answer(command: string, a: Record<string, unknown>): unknown {
    const q35 = this.options.machine === 'q35';
    switch (command) {
      case 'query-status':
        return { running: (this.options.status ?? 'running') === 'running', status: this.options.status ?? 'running' };
      case 'query-cpus-fast':
        return Array.from({ length: this.options.cpus ?? 2 }, (_, i) => ({ 'cpu-index': i }));
      case 'qom-list':
        return [...this.devices.entries()].map(([name, d]) => ({ name, type: `child<${d.driver}>` }));
      case 'query-pci': {
        if (q35) {
          const ports = Array.from({ length: this.options.rootPorts ?? 0 }, (_, i) => `mqh-port${i}`);
          return [
            {
              bus: 0,
              devices: [
                { slot: 0, id: { device: 0x29c0, vendor: 0x8086 }, qdev_id: '', class_info: { class: 0x600 } },
                ...ports.map((p, i) => ({
                  slot: 1 + i,
                  qdev_id: p,
                  class_info: { class: 0x604 },
                  pci_bridge: {
                    bus: { number: i + 1 },
                    devices: [...this.devices.values()].filter((d) => d.bus === p).map(() => ({})),
                  },
                })),
              ],
            },
          ];
        }
        // slot 0 host bridge, 1 ISA/IDE/ACPI, then the ones the test says are taken, then our devices
        const slots = new Set([0, 1, ...Array.from({ length: this.options.usedSlots ?? 0 }, (_, i) => 2 + i)]);
        for (const d of this.devices.values()) if (d.bus === 'pci.0') slots.add(Number(d.addr ?? 31));
        const devices = [...slots].map((slot) => ({
          slot,
          id: { device: slot === 0 ? 0x1237 : 1, vendor: 0x8086 },
          qdev_id: '',
          class_info: { class: 0 },
        }));
        return [{ bus: 0, devices }];
      }
      case 'qom-get': {
        const id = String(a.path).split('/').pop()!;
        const d = this.devices.get(id);
        if (!d) throw new QmpCommandError(command, 'DeviceNotFound', `Device '${id}' not found`);
        return d[a.property as keyof Device];
      }
      case 'human-monitor-command':
        return [...this.netdevs.entries()]
          .map(([id, n]) => `${id}: index=0,type=tap,ifname=${n.tap},script=no,downscript=no\r\n`)
          .join('');
      case 'netdev_add': {
        const id = String(a.id);
        if (this.netdevs.has(id)) throw new QmpCommandError(command, 'GenericError', `Duplicate ID '${id}' for netdev`);
        const tap = String(a.ifname);
        const queues = Number(a.queues ?? 1);
        // QEMU as its user opens a tap that exists and is its own (tun's checks), else refused
        const link = this.links.get(tap);
        const uid = this.options.qemuUid ?? 0;
        if (!link || link.kind !== 'tap' || (uid !== 0 && link.owner !== undefined && link.owner !== uid))
          throw new QmpCommandError(
            command,
            'GenericError',
            `could not configure /dev/net/tun (${tap}): Operation not permitted`,
          );
        if (Boolean(link.multiQueue) !== queues > 1)
          throw new QmpCommandError(
            command,
            'GenericError',
            `could not configure /dev/net/tun (${tap}): Invalid argument`,
          );
        this.netdevs.set(id, { tap, queues });
        link.queues = queues;
        return {};
      }
      case 'device_add': {
        const id = String(a.id);
        if (!this.netdevs.has(String(a.netdev)))
          throw new QmpCommandError(
            command,
            'GenericError',
            `Property 'virtio-net-pci.netdev' can't find value '${String(a.netdev)}'`,
          );
        if (this.devices.has(id)) throw new QmpCommandError(command, 'GenericError', `Duplicate device ID '${id}'`);
        this.devices.set(id, {
          driver: String(a.driver),
          mac: String(a.mac),
          netdev: String(a.netdev),
          mq: Boolean(a.mq),
          vectors: Number(a.vectors),
          bus: String(a.bus),
          addr: a.addr === undefined ? undefined : String(a.addr),
        });
        return {};
      }
      case 'device_del': {
        const id = String(a.id);
        if (!this.devices.has(id)) throw new QmpCommandError(command, 'DeviceNotFound', `Device '${id}' not found`);
        if (this.options.guest) {
          this.devices.delete(id);
          this.emit('DEVICE_DELETED', { path: `/machine/peripheral/${id}/virtio-backend` });
          this.emit('DEVICE_DELETED', { device: id, path: `/machine/peripheral/${id}` });
        }
        return {};
      }
      case 'netdev_del': {
        const id = String(a.id);
        const n = this.netdevs.get(id);
        if (!n) throw new QmpCommandError(command, 'DeviceNotFound', `Device '${id}' not found`);
        this.netdevs.delete(id); // the tap is persistent: it stays until mq-hotplug deletes it
        return {};
      }
      default:
        throw new QmpCommandError(command, 'CommandNotFound', `The command ${command} has not been found`);
    }
  }

  recordPort(): RecordPort {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const world = this;
    const update = (change: (nics: NicRecord[]) => NicRecord[]) => {
      if (world.record) world.record = { ...world.record, nics: change(world.record.nics) };
    };
    return {
      keeps: this.record !== undefined,
      read: () => (world.record ? structuredClone(world.record) : undefined),
      saveNic: (nic) => update((nics) => [...nics.filter((n) => n.id !== nic.id), nic]),
      forgetNic: (id) => update((nics) => nics.filter((n) => n.id !== id)),
      defineNic: (nic) => {
        if (world.definition) world.definition = [...world.definition.filter((n) => n.id !== nic.id), nic];
      },
      undefineNic: (id) => {
        if (world.definition) world.definition = world.definition.filter((n) => n.id !== id);
      },
      markNic: (id, state) => update((nics) => nics.map((n) => (n.id === id ? { ...n, state } : n))),
      locked: (fn) => withProcessLock(world.lockKey, fn),
      qemuExited: async () => world.qemuGone,
    };
  }

  host(): HostPort {
    const links = this.links;
    const info = (name: string): LinkInfo | undefined => {
      const l = links.get(name);
      if (!l) return undefined;
      const kind = l.kind === 'tap' ? 'tun' : l.kind;
      return {
        ifname: name,
        master: l.master,
        up: l.up,
        mtu: l.mtu ?? 1500,
        address: l.address,
        multiQueue: (l.queues ?? 1) > 1,
        numQueues: l.queues,
        numDisabled: 0,
        kind,
      };
    };
    const fail = (argv: string[]) => {
      const e = this.ipFailure;
      if (!e || (argv[0] === 'tuntap' || argv.includes('alias')) !== this.ipFailureOnTap) return;
      this.ipFailure = undefined;
      throw e;
    };
    return {
      findIp: () => (this.options.ipInstalled === false ? undefined : '/sbin/ip'),
      findTc: () => (this.options.ipInstalled === false ? undefined : '/sbin/tc'),
      findOfctl: () => (this.options.ipInstalled === false ? undefined : '/usr/bin/ovs-ofctl'),
      linkExists: (name) => links.has(name),
      linkMtu: (name) => (links.has(name) ? (links.get(name)!.mtu ?? 1500) : undefined),
      // a tap QEMU made with queues > 1 is multi_queue (0x0100); one made by hand (tunctl) is not
      tunFlags: (name) => {
        const l = links.get(name);
        return l?.kind === 'tap' ? 0x1002 | ((l.queues ?? 1) > 1 ? 0x0100 : 0) : undefined;
      },
      isBridge: (name) => links.get(name)?.kind === 'bridge',
      vhostNetUsable: () => this.options.vhostNet ?? false,
      readTap: (name) => {
        const l = links.get(name);
        if (l?.kind !== 'tap') return undefined;
        return { ...(l.owner !== undefined ? { owner: l.owner } : {}), ...(l.alias ? { mark: l.alias } : {}) };
      },
      readLink: (name) => info(name),
      showLinks: async () => new Map([...links.keys()].map((n) => [n, info(n)!])),
      showLink: async (name) => info(name),
      ip: async (argv) => {
        this.ipLines.push(argv);
        await Promise.resolve();
        fail(argv);
        // what the layer sends: tuntap add dev TAP mode tap [multi_queue] vnet_hdr user U;
        // link set dev TAP [address A] [mtu N] [alias M] [master BR] [up]; link add/del of an ifb or tap
        if (argv[0] === 'tuntap') {
          if (links.has(argv[3]!)) throw new Error('ioctl(TUNSETIFF): Device or resource busy');
          return void links.set(argv[3]!, {
            ...{ kind: 'tap', up: false, mtu: 1500, address: '02:00:00:00:00:01' },
            ...{ owner: Number(argv[argv.indexOf('user') + 1]), multiQueue: argv.includes('multi_queue') },
          });
        }
        if (argv[1] === 'add') return void links.set(argv[3]!, { kind: 'ifb', up: false });
        if (argv[1] === 'del') {
          if (!links.delete(argv[3]!)) throw new Error(`Cannot find device "${argv[3]}"`);
          this.qdiscMap.delete(argv[3]!);
          return;
        }
        const [, , , dev, ...rest] = argv;
        const link = links.get(dev!);
        if (!link) throw new Error(`Cannot find device "${dev}"`);
        const arg = (key: string) => (rest.includes(key) ? rest[rest.indexOf(key) + 1] : undefined);
        const bridge = arg('master');
        if (bridge && links.get(bridge)?.kind !== 'bridge') throw new Error(`Device does not exist: ${bridge}`);
        if (arg('address')) link.address = arg('address');
        if (arg('mtu')) link.mtu = Number(arg('mtu'));
        if (arg('alias')) link.alias = arg('alias');
        if (bridge) link.master = bridge;
        if (rest.includes('up')) link.up = true;
      },
      tc: async (lines, options) => {
        const failure = this.tcFailure;
        this.tcFailure = undefined;
        if (failure) throw failure;
        for (const line of lines) {
          this.tcLines.push(line);
          const [what, op, , dev] = line;
          if (!links.has(dev!)) {
            if (options?.force) continue;
            throw new Error(`Cannot find device "${dev}"`);
          }
          const list = this.qdiscMap.get(dev!) ?? [];
          if (what === 'qdisc' && op === 'add') {
            const kind = line.includes('ingress') ? 'ingress' : line[5]!;
            const rate = line.includes('rate')
              ? Number.parseInt(line[line.indexOf('rate') + 1]!, 10) * 125_000
              : undefined;
            list.push({ kind, root: line.includes('root'), rate });
          }
          if (what === 'qdisc' && op === 'del')
            list.splice(
              0,
              list.length,
              ...list.filter((q) => (line.includes('root') ? !q.root : q.kind !== 'ingress')),
            );
          this.qdiscMap.set(dev!, list);
        }
      },
      qdiscs: async () => new Map([...this.qdiscMap].map(([dev, qs]) => [dev, qs.map((q) => ({ ...q, dev }))])),
      warmUp: () => {},
      ipArgv: (argv) => ['ip', ...argv],
      tcArgv: (argv) => ['tc', ...argv],
    };
  }

  /** The commands sent that change the VM (everything but queries). */
  changes(): string[] {
    return this.sent
      .map((s) => s.command)
      .filter((c) => !c.startsWith('query-') && !c.startsWith('qom-') && c !== 'human-monitor-command');
  }
}
