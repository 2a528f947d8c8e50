/**
 * Records QMP transcripts from a real QEMU into fixtures/qmp/*.jsonl, for the fake server of the
 * unit tests. Each line is {"dir":"in"|"out","line":"..."}: "out" what QEMU wrote, "in" what we sent.
 * Run: npm run build && node build/scripts/record-qmp.js
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mqh-rec-'));
const sock = path.join(dir, 'qmp.sock');
const tap = `mqrec${process.pid % 10000}`;

async function record(name: string, commands: object[]): Promise<void> {
  const qemu = execa(
    'qemu-system-x86_64',
    ['-M', 'pc', '-accel', 'tcg', '-nodefaults', '-display', 'none', '-qmp', `unix:${sock},server=on,wait=off`],
    { reject: false },
  );
  while (!fs.existsSync(sock)) await new Promise((r) => setTimeout(r, 10));
  const out: { dir: string; line: string }[] = [];
  const socket = net.createConnection(sock);
  socket.on('error', () => {}); // QEMU resets the socket as it quits
  let buffered = '';
  let waiting: (() => void) | undefined;
  let answers = 0;
  socket.on('data', (chunk) => {
    buffered += chunk.toString();
    const lines = buffered.split('\n');
    buffered = lines.pop()!;
    for (const line of lines) {
      out.push({ dir: 'out', line: line.replace(/\r$/, '') });
      if (/"(return|error)"/.test(line) && !line.includes('"event"')) answers++;
      waiting?.();
    }
  });
  const until = (cond: () => boolean) =>
    new Promise<void>((r) => {
      const check = () => (cond() ? r() : (waiting = check));
      check();
    });
  await until(() => out.length > 0);
  let sent = 0;
  for (const command of commands) {
    const line = JSON.stringify({ ...command, id: `rec-${++sent}` });
    out.push({ dir: 'in', line });
    socket.write(line + '\n');
    await until(() => answers >= sent);
    await new Promise((r) => setTimeout(r, 20)); // let events that follow the answer arrive
  }
  await new Promise<void>((r) => (socket.destroyed ? r() : socket.on('close', () => r())));
  qemu.kill('SIGKILL');
  await qemu;
  fs.writeFileSync(`fixtures/qmp/${name}.jsonl`, out.map((o) => JSON.stringify(o)).join('\n') + '\n');
  console.log(`fixtures/qmp/${name}.jsonl: ${out.length} lines`);
}

await record('session', [
  { execute: 'qmp_capabilities' },
  { execute: 'query-status' },
  { execute: 'query-version' },
  { execute: 'stop' },
  { execute: 'cont' },
  { execute: 'qom-get', arguments: { path: '/machine', property: 'usb' } }, // false
  {
    execute: 'netdev_add',
    arguments: { type: 'tap', id: 'nd0', ifname: tap, script: 'no', downscript: 'no', vhost: false, queues: 8 },
  },
  {
    execute: 'device_add',
    arguments: {
      driver: 'virtio-net-pci',
      id: 'nic0',
      netdev: 'nd0',
      mac: '52:54:00:12:34:56',
      mq: true,
      vectors: 18,
      bus: 'pci.0',
    },
  },
  { execute: 'qom-get', arguments: { path: '/machine/peripheral/nic0', property: 'host_mtu' } }, // 0
  { execute: 'qom-get', arguments: { path: '/machine/peripheral/nic0', property: 'mac' } },
  { execute: 'qom-list', arguments: { path: '/machine/peripheral' } },
  { execute: 'query-rx-filter' },
  { execute: 'device_del', arguments: { id: 'nosuch' } }, // an error
  { execute: 'device_del', arguments: { id: 'nic0' } }, // {} and, with no guest, nothing more
  { execute: 'quit' },
]);
fs.rmSync(dir, { recursive: true, force: true });
