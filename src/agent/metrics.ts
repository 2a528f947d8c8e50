/**
 * The agent's metrics for Prometheus, with prom-client (what Node services expose them with: the
 * exposition format, label escaping, histograms and the process's own metrics, kept right by it).
 *
 * Per NIC, read at each scrape: the tap's counters from sysfs and its queues from `ip -d link`
 * (one exec), labelled vm, nic, tap, bridge and vlan. The tap's receive is what the guest sent.
 * Per VM, from its events (the agent's own operations and, through the event log, every other
 * process's): adds and removes with their durations, failures by kind, drift found and repaired.
 * The agent's memory is prom-client's process metrics (process_resident_memory_bytes, ...).
 */
import fs from 'node:fs';
import http from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { VmEvent } from '../hotplug/events.js';
import type { LinkInfo } from '../host/ip.js';
import type { NicRecord } from '../model/nic.js';
import { UsageError } from '../errors.js';

const TAP_COUNTERS = [
  ['receive_bytes', 'rx_bytes'],
  ['receive_packets', 'rx_packets'],
  ['receive_drops', 'rx_dropped'],
  ['receive_errors', 'rx_errors'],
  ['transmit_bytes', 'tx_bytes'],
  ['transmit_packets', 'tx_packets'],
  ['transmit_drops', 'tx_dropped'],
  ['transmit_errors', 'tx_errors'],
] as const;
const NIC_LABELS = ['vm', 'nic', 'tap', 'bridge', 'vlan'] as const;
/** seconds: an add here is 20-60 ms, one with a guest wait up to 30 s */
const BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export interface MetricsSource {
  /** Every watched VM's NICs, as recorded. */
  nics(): { vm: string; nics: NicRecord[] }[];
  /** The host's links, with their queue counts. */
  links(): Promise<Map<string, LinkInfo>>;
}

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly adds = this.counter('mq_hotplug_nic_adds_total', 'NICs hot-plugged', ['vm']);
  private readonly removes = this.counter('mq_hotplug_nic_removes_total', 'NICs unplugged, by who asked', [
    'vm',
    'reason',
  ]);
  private readonly failures = this.counter('mq_hotplug_failures_total', 'failed operations, by kind', ['vm', 'kind']);
  private readonly driftFound = this.counter('mq_hotplug_drift_found_total', 'taps found drifted from their record', [
    'vm',
    'what',
  ]);
  private readonly driftRepaired = this.counter('mq_hotplug_drift_repaired_total', 'drifted taps put right', ['vm']);
  private readonly commands = this.counter('mq_hotplug_agent_commands_total', 'CLI commands run by the agent', [
    'command',
    'exit_code',
  ]);
  private readonly addSeconds = this.histogram(
    'mq_hotplug_nic_add_duration_seconds',
    'an add, from its start under the lock to its end',
  );
  private readonly removeSeconds = this.histogram(
    'mq_hotplug_nic_remove_duration_seconds',
    'a remove, from device_del to its end',
  );

  constructor(source: MetricsSource) {
    collectDefaultMetrics({ register: this.registry });
    new Gauge({
      name: 'mq_hotplug_vms_watched',
      help: 'VMs the agent watches',
      registers: [this.registry],
      collect() {
        this.set(source.nics().length);
      },
    });
    const nicLabels = (vm: string, n: NicRecord) => ({
      vm,
      nic: n.id,
      tap: n.tap,
      bridge: n.bridge ?? '',
      vlan: n.vlan === undefined ? '' : String(n.vlan),
    });
    const active = () =>
      source.nics().flatMap(({ vm, nics }) => nics.filter((n) => n.state === 'active').map((n) => ({ vm, n })));
    for (const [name, file] of TAP_COUNTERS) {
      new Counter({
        name: `mq_hotplug_tap_${name}_total`,
        help: `the tap's ${file} (sysfs); receive is what the guest sent`,
        labelNames: NIC_LABELS,
        registers: [this.registry],
        collect() {
          this.reset();
          for (const { vm, n } of active()) {
            const value = readCounter(n.tap, file);
            if (value !== undefined) this.inc(nicLabels(vm, n), value);
          }
        },
      });
    }
    new Gauge({
      name: 'mq_hotplug_nic_queues',
      help: 'queue pairs of the NIC',
      labelNames: NIC_LABELS,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const { vm, n } of active()) this.set(nicLabels(vm, n), n.queues);
      },
    });
    new Gauge({
      name: 'mq_hotplug_nic_queues_active',
      help: "queue pairs the guest has enabled (the tap's numqueues; its disabled ones are not counted there)",
      labelNames: NIC_LABELS,
      registers: [this.registry],
      async collect() {
        this.reset();
        const links = await source.links();
        for (const { vm, n } of active()) {
          const link = links.get(n.tap);
          if (link?.numQueues !== undefined) this.set(nicLabels(vm, n), link.numQueues);
        }
      },
    });
  }

  /** Counts a command the agent ran for a CLI. */
  served(command: string, exitCode: number): void {
    this.commands.inc({ command, exit_code: String(exitCode) });
  }

  /** Counts what one VM's event says. */
  observe(vm: string, e: VmEvent): void {
    if (e.source !== 'controller') return;
    switch (e.event) {
      case 'NIC_ADDED':
        this.adds.inc({ vm });
        this.addSeconds.observe({ vm }, e.data.ms / 1000);
        break;
      case 'NIC_ADD_FAILED':
        this.failures.inc({ vm, kind: e.data.kind });
        break;
      case 'NIC_BRIDGE_FAILED':
        this.failures.inc({ vm, kind: 'bridging' });
        break;
      case 'RECONCILE_FAILED':
        this.failures.inc({ vm, kind: 'reconcile' });
        break;
      case 'NIC_REMOVED':
        this.removes.inc({ vm, reason: e.data.reason });
        if (e.data.ms !== null) this.removeSeconds.observe({ vm }, e.data.ms / 1000);
        break;
      case 'NIC_REATTACHED':
        for (const what of e.data.fixed) this.driftFound.inc({ vm, what });
        this.driftRepaired.inc({ vm });
        break;
      case 'NIC_BRIDGE_MISSING':
        this.driftFound.inc({ vm, what: 'bridge missing' });
        break;
    }
  }

  /**
   * Serves GET /metrics on a unix socket (a path with a '/') or a TCP port, [host:]port, on
   * 127.0.0.1 unless a host is given.
   */
  async serve(where: string): Promise<{ close(): Promise<void>; address: string }> {
    const server = http.createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404).end('mq-hotplug agent: GET /metrics\n');
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'Content-Type': this.registry.contentType }).end(text),
        (e: Error) => res.writeHead(500).end(`${e.message}\n`),
      );
    });
    const target = listenTarget(where);
    const oldMask = process.umask(0o077); // a unix socket: root's only, like the control socket
    try {
      if ('path' in target) fs.rmSync(target.path, { force: true });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(target, resolve);
      });
    } finally {
      process.umask(oldMask);
    }
    if ('path' in target) fs.chmodSync(target.path, 0o600);
    const address = 'path' in target ? target.path : `${target.host}:${target.port}`;
    return {
      address,
      close: () => new Promise<void>((resolve) => server.close(() => resolve())),
    };
  }

  private histogram(name: string, help: string): Histogram<'vm'> {
    return new Histogram({ name, help, labelNames: ['vm'], buckets: BUCKETS, registers: [this.registry] });
  }

  private counter<L extends string>(name: string, help: string, labelNames: readonly L[]): Counter<L> {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }
}

/** --metrics: a socket path, a port, or host:port. */
export function listenTarget(where: string): { path: string } | { host: string; port: number } {
  if (where.includes('/')) return { path: where };
  const m = /^(?:(\[[0-9a-f:]+\]|[0-9.]+|localhost):)?(\d{1,5})$/i.exec(where);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535)
    throw new UsageError(
      `invalid --metrics '${where}': use a port (9105, on 127.0.0.1), host:port, or a unix socket path`,
    );
  return { host: (m[1] ?? '127.0.0.1').replace(/^\[|\]$/g, ''), port };
}

function readCounter(tap: string, file: string): number | undefined {
  try {
    return Number(fs.readFileSync(`/sys/class/net/${tap}/statistics/${file}`, 'utf8'));
  } catch {
    return undefined; // the tap went between the record's read and here
  }
}
