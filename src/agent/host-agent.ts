/**
 * `mq-hotplug agent`: one process for every VM of the state directory. It follows VMs as they
 * start, stop, die and come back (a scan of the state directory every SCAN_MS, nothing to
 * restart), and per VM does what `agent VM` does: events, reconcile, hooks, and the clean-up of a
 * VM whose QEMU died. One VM's trouble stays its own: each VM's monitor, reactions and hooks run on
 * their own async chains, and a failure is logged for that VM only.
 *
 * It also serves the CLI (control.ts: the commands run here, with one batch ip shared by every
 * controller), its metrics (metrics.ts), and a link monitor that asks a VM to check its taps as
 * soon as the kernel changes one of them (a drift is put right in milliseconds, not at the next
 * periodic check).
 */
import fs from 'node:fs';
import { Subject } from 'rxjs';
import { type Hook, runHook } from '../cli/watch.js';
import { LinuxHost } from '../hotplug/adapters.js';
import { shareHost } from '../hotplug/controller.js';
import { type WatchedVm, type Watchers, cleanUpAfter, setWatchers, watchVm } from '../hotplug/watched-vm.js';
import { monitorLinks } from '../host/link-monitor.js';
import type { NicRecord } from '../model/nic.js';
import type { VmEvent } from '../hotplug/events.js';
import { DefinitionStore } from '../qemu/definition.js';
import { StateStore, qemuAlive } from '../qemu/state.js';
import { bindToClient, forNoClient } from '../util/request.js';
import { writeErr } from '../util/write.js';
import { type ControlServer, type RunProgram, serveControl } from './control.js';
import { AgentMetrics } from './metrics.js';

const SCAN_MS = 250;
/** After a VM's monitor could not be opened (busy with another client, say), the next try. */
const RETRY_MS = 5000;

/** What the agent says of a VM's event on stderr (the journal): its own repairs and failures. */
function logLine(e: VmEvent): string | undefined {
  if (e.source !== 'controller') return undefined;
  switch (e.event) {
    case 'NIC_REATTACHED':
      return `put ${e.data.tap} right (${e.data.fixed.join(', ')})`;
    case 'NIC_RECOVERED':
      return `${e.data.outcome} the half-made add of ${e.data.device}`;
    case 'NIC_BRIDGE_MISSING':
      return `${e.data.tap}: its bridge ${e.data.bridge} is gone`;
    case 'RECONCILE_FAILED':
      return `reconcile failed: ${e.data.error}`;
    default:
      return undefined;
  }
}

export interface HostAgentOptions {
  stateDir: string;
  configDir: string;
  checkIntervalMs: number;
  /** false: follow events (metrics, hooks) and serve the CLI, but change nothing on its own */
  reconcile: boolean;
  hooks: Hook[];
  /** Start every defined VM that is not running (at boot, from the systemd unit). */
  startDefined?: boolean;
  /** Where metrics are served: a port, host:port or a unix socket path. */
  metrics?: string;
  /** The CLI's program, which the control socket's commands run through. */
  runProgram: RunProgram;
}

interface Followed {
  opening: Promise<WatchedVm>;
  /** The record's mtime when `nics` was read */
  mtimeMs: number;
  nics: NicRecord[];
  kick: Subject<void>;
}

export class HostAgent implements Watchers {
  private readonly store: StateStore;
  private readonly definitions: DefinitionStore;
  private readonly host = new LinuxHost();
  private readonly followed = new Map<string, Followed>();
  private readonly tapOwners = new Map<string, string>();
  private readonly retryAt = new Map<string, number>();
  readonly metrics: AgentMetrics;
  private control?: ControlServer;
  private metricsServer?: { close(): Promise<void>; address: string };
  private links?: { close(): void };
  private scanning?: NodeJS.Timeout;
  private stopped = false;

  constructor(private readonly o: HostAgentOptions) {
    this.store = new StateStore(o.stateDir);
    this.definitions = new DefinitionStore(o.configDir);
    this.metrics = new AgentMetrics({
      nics: () => [...this.followed].map(([vm, f]) => ({ vm, nics: f.nics })),
      links: () => this.host.showLinks(),
    });
  }

  async start(): Promise<void> {
    this.store.prepareRoot();
    this.control = await serveControl(this.store.root, this.o.runProgram, (command, code) =>
      this.metrics.served(command, code),
    );
    shareHost(this.host);
    setWatchers(this);
    this.host.warmUp();
    if (this.o.metrics) this.metricsServer = await this.metrics.serve(this.o.metrics);
    this.links = monitorLinks((name) => {
      const vm = this.tapOwners.get(name);
      if (vm) this.followed.get(vm)?.kick.next();
    });
    this.scan();
    writeErr(
      `agent: serving ${this.control.socket}${this.metricsServer ? `, metrics on ${this.metricsServer.address}` : ''}\n`,
    );
    if (this.o.startDefined) void this.startDefined();
  }

  get reconciles(): boolean {
    return this.o.reconcile;
  }

  get roots(): { state: string; config: string } {
    return { state: this.store.root, config: this.definitions.root };
  }

  /** The VM's watcher (for a `watch` run here), opened now where it runs and none is open. */
  borrow(name: string): Promise<WatchedVm> {
    return this.follow(name).opening;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.scanning);
    this.links?.close();
    await this.control?.close();
    await this.metricsServer?.close();
    const open = [...this.followed.values()].map((f) => f.opening.then((w) => w.close()).catch(() => {}));
    this.followed.clear();
    await Promise.all(open);
    setWatchers(undefined);
    shareHost(undefined);
    this.host.close();
  }

  /** Picks up every running VM not followed yet, and re-reads the NICs of those whose record changed. */
  private scan(): void {
    if (this.stopped) return;
    try {
      this.scanOnce();
    } catch (e) {
      writeErr(`agent: reading ${this.store.root}: ${(e as Error).message}\n`);
    }
    this.scanning = setTimeout(() => this.scan(), SCAN_MS);
  }

  private scanOnce(): void {
    for (const name of this.store.list()) {
      const followed = this.followed.get(name);
      let mtimeMs: number;
      try {
        mtimeMs = fs.statSync(`${this.store.vmDir(name)}/vm.json`).mtimeMs;
      } catch {
        continue; // still being made, or just removed
      }
      if (followed && followed.mtimeMs === mtimeMs) continue;
      const record = this.store.readIfValid(name);
      if (!record) continue;
      if (!followed) {
        if (qemuAlive(record) && (this.retryAt.get(name) ?? 0) <= Date.now()) this.follow(name);
        continue;
      }
      this.setNics(name, followed, record.nics, mtimeMs);
    }
  }

  /** The VM's NICs as recorded, and which VM each tap is of (for the link monitor). */
  private setNics(name: string, followed: Followed, nics: NicRecord[], mtimeMs: number): void {
    for (const n of followed.nics) if (this.tapOwners.get(n.tap) === name) this.tapOwners.delete(n.tap);
    followed.nics = nics;
    followed.mtimeMs = mtimeMs;
    for (const n of nics) this.tapOwners.set(n.tap, name);
  }

  private follow(name: string): Followed {
    const existing = this.followed.get(name);
    if (existing) return existing;
    return forNoClient(() => this.open(name)); // a watch borrowing it is not who it writes for
  }

  private open(name: string): Followed {
    const kick = new Subject<void>();
    const opening = watchVm(
      { name, store: this.store, definitions: this.definitions, monitor: 'events' },
      { reconcile: this.o.reconcile, periodMs: this.o.checkIntervalMs, kick$: kick, recover: this.o.reconcile },
    );
    const followed: Followed = { opening, mtimeMs: -1, nics: [], kick };
    this.followed.set(name, followed);
    opening.then(
      (w) => {
        this.retryAt.delete(name);
        writeErr(`agent: watching ${name}${this.o.reconcile ? ' and reconciling' : ''}\n`);
        const subscription = w.events$.subscribe(
          bindToClient((e: VmEvent) => {
            this.metrics.observe(name, e);
            // a NIC came or went: its tap is watched from now, not from the next scan
            if (e.source === 'controller') this.setNics(name, followed, this.store.readIfValid(name)?.nics ?? [], -1);
            const said = logLine(e);
            if (said) writeErr(`agent: ${name}: ${said}\n`);
            for (const hook of this.o.hooks)
              if (hook.event === e.event || hook.event === '*') void runHook(hook, name, e);
          }),
        );
        void w.ended.then(async (why) => {
          // first, at once: a watch borrowing this VM's watcher next must get a new one
          if (this.followed.get(name) === followed) this.forget(name, followed);
          subscription.unsubscribe();
          if (!this.stopped) writeErr(`agent: ${name}: ${why}\n`);
          await w.close();
          if (this.stopped || !this.o.reconcile) return;
          await cleanUpAfter({ name, store: this.store }, this.definitions).catch((e: Error) =>
            writeErr(`agent: ${name}: clean-up after its QEMU failed: ${e.message}\n`),
          );
        });
      },
      (e: Error) => {
        // not running after all, or its monitor would not have us: tried again a little later
        if (this.followed.get(name) === followed) this.forget(name, followed);
        this.retryAt.set(name, Date.now() + RETRY_MS);
        if (!this.stopped) writeErr(`agent: ${name}: ${e.message}\n`);
      },
    );
    return followed;
  }

  private forget(name: string, followed: Followed): void {
    this.followed.delete(name);
    for (const n of followed.nics) if (this.tapOwners.get(n.tap) === name) this.tapOwners.delete(n.tap);
  }

  /** Every defined VM that is not running, started with its saved NICs, one after another. */
  private async startDefined(): Promise<void> {
    for (const name of this.definitions.list()) {
      if (this.stopped) return;
      const record = this.store.readIfValid(name);
      if (record && qemuAlive(record)) continue;
      writeErr(`agent: starting ${name}\n`);
      await this.o.runProgram(['start', name, '--if-not-running'], {
        env: { ...process.env, MQ_HOTPLUG_STATE_DIR: this.store.root, MQ_HOTPLUG_CONFIG_DIR: this.definitions.root },
      });
    }
  }
}
