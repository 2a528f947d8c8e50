/**
 * The host's network as a context sees it: each port goes to the backend its bridge is. The kind is
 * decided once, at the add's preflight (checkBridge), and kept with the NIC (bridgeKind), so that
 * remove, rollback, recovery and drift reach the same backend even when the bridge is gone.
 *
 * Telling them apart: a Linux bridge is a kernel link of kind bridge; an OVS bridge is a row in
 * OVSDB's Bridge table (its own interface is a tap or an internal port, never a kernel bridge).
 * Both of one name cannot work (OVS could not have made its interface): refused.
 */
import { UsageError } from '../../errors.js';
import type { LinkInfo } from '../../host/ip.js';
import type { BridgeKind, Port } from '../../model/nic.js';
import type { HostPort } from '../context.js';
import type { NetworkBackend, Observation } from './backend.js';
import { LinuxBridge } from './linux-bridge.js';
import { OvsBridge, type PortOwner } from './ovs-bridge.js';

interface Seen extends Observation {
  linux: Observation;
  ovs?: Observation;
}

export class HostNetwork implements NetworkBackend {
  readonly kind = 'host network';
  readonly linux: LinuxBridge;
  readonly ovs: OvsBridge;

  constructor(
    private readonly host: HostPort,
    owner: PortOwner,
    ovsSocket?: string,
  ) {
    this.linux = new LinuxBridge(host);
    this.ovs = new OvsBridge(host, owner, ovsSocket);
  }

  async checkBridge(bridge: string): Promise<BridgeKind> {
    const linux = this.host.isBridge(bridge);
    const { ovs, unreachable } = await this.ovs.hasBridge(bridge);
    if (linux && ovs)
      throw new UsageError(
        `'${bridge}' is a Linux bridge and an Open vSwitch bridge at once (OVS could not make its interface); delete one (ip link del ${bridge}, or ovs-vsctl del-br ${bridge})`,
      );
    if (linux) return 'linux';
    if (ovs) return 'ovs';
    const why = unreachable ? `; ${unreachable}` : '';
    if (this.host.linkExists(bridge))
      throw new UsageError(
        `'${bridge}' is not a bridge: neither a Linux bridge nor an Open vSwitch bridge${why}; give --bridge the name of one`,
      );
    throw new UsageError(
      `bridge '${bridge}' does not exist (create it: ip link add ${bridge} type bridge, or ovs-vsctl add-br ${bridge})${why}`,
    );
  }

  bridgeMtu(bridge: string): number | undefined {
    return this.host.linkMtu(bridge);
  }

  commands(p: Port): string[][] {
    return this.of(p).commands(p);
  }

  attach(p: Port): Promise<void> {
    return this.of(p).attach(p);
  }

  detach(p: Port): Promise<string[]> {
    return this.of(p).detach(p);
  }

  async observe(ports: Port[]): Promise<Seen> {
    const onOvs = ports.filter((p) => p.bridgeKind === 'ovs');
    const [linux, ovs] = await Promise.all([
      this.linux.observe(ports.filter((p) => p.bridgeKind !== 'ovs')),
      onOvs.length ? this.ovs.observe(onOvs) : undefined,
    ]);
    return { backend: this.kind, linux, ovs };
  }

  drift(p: Port, link: LinkInfo | undefined, seen: Seen): string[] {
    return p.bridgeKind === 'ovs'
      ? this.ovs.drift(p, link, seen.ovs as never)
      : this.linux.drift(p, link, seen.linux as never);
  }

  bridgeOf(p: Port, link: LinkInfo | undefined, seen: Seen): string | null {
    return p.bridgeKind === 'ovs' ? this.ovs.bridgeOf(p, link, seen.ovs as never) : this.linux.bridgeOf(p, link);
  }

  repair(p: Port, link: LinkInfo | undefined, seen: Seen): Promise<void> {
    return p.bridgeKind === 'ovs'
      ? this.ovs.repair(p, link, seen.ovs as never)
      : this.linux.repair(p, link, seen.linux as never);
  }

  update(before: Port, after: Port): Promise<void> {
    return this.of(after).update(before, after);
  }

  close(): void {
    this.ovs.close();
  }

  private of(p: Port): NetworkBackend {
    return p.bridgeKind === 'ovs' ? this.ovs : this.linux;
  }
}
