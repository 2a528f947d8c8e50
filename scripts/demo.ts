/**
 * The main job, end to end, narrated: start a VM with only QMP, hot-plug an 8-queue NIC onto a
 * bridge, show what the guest sees (`ethtool -l eth0`) and what the host sees (the tap's queues),
 * then remove the NIC, stop and undefine the VM and delete everything this demo made. Run as root:
 *   npm ci && npm run demo
 */
import { execa } from 'execa';
import { cleanupAll, cli, makeBridge, tempDir, trackVm } from '../test/helpers/env.js';
import { Guest, guestImage } from '../test/helpers/guest.js';

const bold = (text: string) => (process.stdout.isTTY ? `\x1b[1m${text}\x1b[0m` : text);
const say = (text: string) => process.stdout.write(`\n${bold(`# ${text}`)}\n`);

async function run(args: string[], env: Record<string, string>): Promise<string> {
  process.stdout.write(`$ mq-hotplug ${args.join(' ')}\n`);
  const r = await cli(args, env);
  process.stdout.write(r.stdout + r.stderr);
  if (r.exitCode !== 0) throw new Error(`mq-hotplug ${args[0]} exited with ${r.exitCode}`);
  return r.stdout;
}

async function main(): Promise<void> {
  say('Building the tiny test guest (Debian kernel + busybox, cached after the first run)');
  const { kernel, initrd } = await guestImage();
  process.stdout.write(`kernel ${kernel}\ninitrd ${initrd}\n`);

  const bridge = await makeBridge();
  say(`Bridge ${bridge} created (ip link add ${bridge} type bridge)`);

  const stateDir = tempDir('demo');
  const env = { MQ_HOTPLUG_STATE_DIR: stateDir };
  say('Starting a VM with 8 vCPUs and no NIC at all: only QMP monitors, a kernel and a serial console');
  process.stdout.write(
    `$ mq-hotplug start demo --cpus 8 --memory 256M --kernel ... --initrd ... --serial ... --bridge ${bridge}\n`,
  );
  const guest = await Guest.boot({ name: trackVm('demo'), stateDir, cpus: 8, machine: 'pc', bridge });
  process.stdout.write('guest booted: ' + (await guest.waitForLine((l) => l.startsWith('MQH READY'), 1000)) + '\n');
  await run(['vms'], env);

  say('Hot-plugging an 8-queue virtio-net NIC: netdev_add (tap, queues 8), device_add (mq, vectors 18), then bridging');
  await run(['add', 'demo', '--queues', '8', '--bridge', bridge, '--wait-guest', '30'], env);
  const [added] = JSON.parse((await cli(['nics', 'demo', '--json'], env)).stdout) as {
    mac: string;
    tap: string;
    id: string;
  }[];
  if (!added) throw new Error('mq-hotplug nics shows no NIC after add');

  say(`What the guest sees (inside the VM: ethtool -l on the NIC with MAC ${added.mac})`);
  const nic = await guest.waitFor(() => guest.nics.get(added.mac), 'the new NIC');
  const ethtool = await guest.run(`ethtool -l ${nic.ifname}`);
  process.stdout.write(ethtool.output.join('\n') + '\n');
  process.stdout.write(`queue interrupts in the guest: ${nic.irqIn} input + ${nic.irqOut} output\n`);

  say(`What the host sees (ip -d link show ${added.tap}, and mq-hotplug nics)`);
  const { stdout } = await execa('ip', ['-d', 'link', 'show', 'dev', added.tap]);
  process.stdout.write(
    stdout
      .split('\n')
      .filter((l) => /master|tun type tap/.test(l))
      .map((l) => l.trim())
      .join('\n') + '\n',
  );
  await run(['nics', 'demo'], env);

  say(
    'Removing the NIC (device_del, DEVICE_DELETED from the guest, netdev_del, its tap), stopping and undefining the VM',
  );
  await run(['remove', 'demo', added.id], env);
  await run(['stop', 'demo'], env);
  await run(['undefine', 'demo'], env); // and with its definition goes the user its QEMU ran as

  const combined = /^Combined:\s+(\d+)/m.exec(ethtool.output.join('\n'))?.[1];
  say(
    combined === '8'
      ? 'Done: the guest saw 8 combined channels. Everything this demo made is gone.'
      : `Unexpected: the guest showed ${combined ?? 'no'} combined channels`,
  );
  if (combined !== '8') process.exitCode = 1;
}

try {
  await main();
} catch (e) {
  process.stderr.write(`demo failed: ${(e as Error).message}\n`);
  process.exitCode = 1;
} finally {
  cleanupAll();
}
