/**
 * The baseline: a minimal QMP client as an operator would hand-roll it. A raw socket, no RxJS, no
 * checks; one command at a time; netdev_add, device_add, then one `ip link set dev TAP master BR up`.
 */
import { execFile } from 'node:child_process';
import net from 'node:net';
import { promisify } from 'node:util';

const run = promisify(execFile);

export class RawQmp {
  private buffer = '';
  private waiting?: (line: Record<string, unknown>) => void;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk) => {
      this.buffer += chunk.toString();
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        const message = JSON.parse(this.buffer.slice(0, nl)) as Record<string, unknown>;
        this.buffer = this.buffer.slice(nl + 1);
        if (!('event' in message)) this.waiting?.(message);
      }
    });
  }

  static async connect(path: string): Promise<RawQmp> {
    const socket = net.createConnection(path);
    const client = new RawQmp(socket);
    await new Promise<void>((resolve) => (client.waiting = () => resolve())); // greeting
    await client.command({ execute: 'qmp_capabilities' });
    return client;
  }

  command(message: object): Promise<Record<string, unknown>> {
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.socket.write(JSON.stringify(message) + '\n');
    });
  }

  async addNic(i: number, tap: string, bridge: string): Promise<void> {
    await this.command({
      execute: 'netdev_add',
      arguments: { type: 'tap', id: `nd${i}`, ifname: tap, script: 'no', downscript: 'no', vhost: false, queues: 8 },
    });
    await this.command({
      execute: 'device_add',
      arguments: { driver: 'virtio-net-pci', id: `nic${i}`, netdev: `nd${i}`, mq: true, vectors: 18, bus: 'pci.0' },
    });
    await run('ip', ['link', 'set', 'dev', tap, 'master', bridge, 'up']);
  }

  close(): void {
    this.socket.destroy();
  }
}
