import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { QmpClient } from '../../src/qmp/client.js';
import { QmpBusyError, QmpCommandError, QmpDisconnectedError } from '../../src/qmp/errors.js';
import { nextEvent } from '../../src/qmp/events.js';
import { QEMU, sleep, tempDir, trackPid } from '../helpers/env.js';

describe('QmpClient against a real QEMU', () => {
  let sock: string;
  let qemu: ReturnType<typeof execa>;

  beforeEach(async () => {
    sock = path.join(tempDir('qmp'), 'qmp.sock');
    qemu = execa(
      QEMU,
      ['-M', 'pc', '-accel', 'tcg', '-nodefaults', '-display', 'none', '-qmp', `unix:${sock},server=on,wait=off`],
      { reject: false },
    );
    trackPid(qemu.pid!);
    while (!fs.existsSync(sock)) await sleep(5);
  });
  afterEach(async () => {
    qemu.kill('SIGKILL');
    await qemu;
  });

  it('negotiates and answers query-status and query-version', async () => {
    const qmp = await QmpClient.connect(sock);
    expect(qmp.version.major).to.be.at.least(7);
    expect(await qmp.execute('query-status')).to.deep.include({ running: true, status: 'running' });
    const version = await qmp.execute<{ qemu: { major: number; minor: number } }>('query-version');
    expect(version.qemu).to.deep.include({ major: qmp.version.major, minor: qmp.version.minor });
    await qmp.close();
  });

  it('matches a pipelined burst of 1000 mixed commands to their answers', async () => {
    const qmp = await QmpClient.connect(sock);
    const burst = Array.from({ length: 1000 }, (_, i) =>
      i % 3 === 0
        ? qmp.execute('query-status').then((r) => ['status', (r as { status: string }).status])
        : i % 3 === 1
          ? qmp.execute('qom-get', { path: '/machine', property: 'usb' }).then((r) => ['usb', r])
          : qmp.execute('qom-get', { path: '/machine', property: 'type' }).then((r) => ['type', r]),
    );
    const results = await Promise.all(burst);
    const type = results[2]![1];
    expect(type).to.match(/^pc-i440fx-\d+\.\d+-machine$/); // this QEMU's (7.2 or 10.0)
    results.forEach((r, i) => {
      const expected = i % 3 === 0 ? ['status', 'running'] : i % 3 === 1 ? ['usb', false] : ['type', type];
      expect(r, `command ${i}`).to.deep.equal(expected);
    });
    await qmp.close();
  });

  it('rejects a bad command with its QMP class and desc', async () => {
    const qmp = await QmpClient.connect(sock);
    const err = await qmp.execute('device_del', { id: 'nosuch' }).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(QmpCommandError).and.include({ errorClass: 'DeviceNotFound', command: 'device_del' });
    expect((err as QmpCommandError).desc).to.match(/nosuch/);
    expect(await qmp.execute('query-status')).to.deep.include({ running: true }); // still usable
    await qmp.close();
  });

  it('says the monitor is busy while another client holds it', async () => {
    const first = await QmpClient.connect(sock);
    const err = await QmpClient.connect(sock, { greetingTimeoutMs: 300 }).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(QmpBusyError);
    expect((err as Error).message).to.include(sock);
    await first.close();
    const second = await QmpClient.connect(sock);
    expect(await second.execute('query-status')).to.deep.include({ running: true });
    await second.close();
  });

  it('connects over TCP (host:port) as well as a unix socket', async () => {
    const port = 20000 + (process.pid % 20000);
    const tcp = execa(
      QEMU,
      [
        '-M',
        'pc',
        '-accel',
        'tcg',
        '-nodefaults',
        '-display',
        'none',
        '-qmp',
        `tcp:127.0.0.1:${port},server=on,wait=off`,
      ],
      { reject: false },
    );
    trackPid(tcp.pid!);
    try {
      let qmp: QmpClient | undefined;
      for (let i = 0; i < 200 && !qmp; i++)
        qmp = await QmpClient.connect(`127.0.0.1:${port}`).catch(() => sleep(10).then(() => undefined));
      expect(qmp, 'QEMU listening on TCP').to.not.equal(undefined);
      expect(await qmp!.execute('query-status')).to.deep.include({ running: true });
      await qmp!.close();
    } finally {
      tcp.kill('SIGKILL');
      await tcp;
    }
  });

  it('quit: SHUTDOWN arrives, then EOF closes the client and completes events$', async () => {
    const qmp = await QmpClient.connect(sock);
    const shutdown = nextEvent(qmp.events$, 'SHUTDOWN', undefined, 5000);
    await qmp.execute('quit').catch((e: unknown) => expect(e).to.be.instanceOf(QmpDisconnectedError));
    expect((await shutdown).data).to.deep.include({ reason: 'host-qmp-quit' });
    const reason = await qmp.closed;
    expect(reason).to.be.instanceOf(QmpDisconnectedError);
    expect(await qmp.execute('query-status').catch((e: unknown) => e)).to.be.instanceOf(QmpDisconnectedError);
  });
});
