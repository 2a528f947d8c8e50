import { expect } from 'chai';
import { firstValueFrom, toArray } from 'rxjs';
import { QmpClient } from '../../src/qmp/client.js';
import {
  QmpBusyError,
  QmpCommandError,
  QmpConnectError,
  QmpDisconnectedError,
  QmpProtocolError,
  QmpTimeoutError,
} from '../../src/qmp/errors.js';
import { EventTimeoutError, forDevice, nextEvent } from '../../src/qmp/events.js';
import type { QmpEvent } from '../../src/qmp/messages.js';
import { type Chunking, FakeQmpServer, loadTranscript, prng, randomChunks } from '../helpers/fake-qmp.js';
import { pollUntil } from '../../src/util/time.js';

const event = (name: string, data?: object) => ({
  event: name,
  ...(data ? { data } : {}),
  timestamp: { seconds: 1, microseconds: 2 },
});

describe('QmpClient against a fake QMP server', () => {
  let server: FakeQmpServer;
  beforeEach(async () => (server = await FakeQmpServer.start()));
  afterEach(async () => server.close());

  async function connected(): Promise<{ qmp: QmpClient; conn: Awaited<ReturnType<FakeQmpServer['nextConnection']>> }> {
    const qmp = new QmpClient(server.path);
    const ready = qmp.connect();
    const conn = await server.nextConnection();
    await conn.negotiate();
    await ready;
    return { qmp, conn };
  }

  it('is ready only once qmp_capabilities is answered, and exposes the version', async () => {
    const qmp = new QmpClient(server.path);
    let ready = false;
    const connecting = qmp.connect().then(() => (ready = true));
    const conn = await server.nextConnection();
    await conn.greet();
    const cmd = await conn.nextCommand();
    expect(cmd.execute).to.equal('qmp_capabilities');
    await new Promise((r) => setTimeout(r, 20));
    expect(ready, 'ready before qmp_capabilities was answered').to.equal(false);
    await conn.sendJson({ return: {}, id: cmd.id });
    await connecting;
    expect(qmp.isReady).to.equal(true);
    expect(qmp.version).to.deep.equal({ major: 7, minor: 2, micro: 22, package: 'fake' });
    await qmp.close();
  });

  for (const chunking of ['line', 'byte', 'all'] as Chunking[]) {
    it(`replays a transcript recorded from QEMU 7.2, chunked by ${String(chunking)}`, async () => {
      const transcript = loadTranscript('session');
      const qmp = new QmpClient(server.path);
      const events: QmpEvent[] = [];
      qmp.events$.subscribe((e) => events.push(e));
      const connecting = qmp.connect();
      const conn = await server.nextConnection();
      const replaying = conn.replay(transcript, chunking);
      await connecting;
      expect(await qmp.execute('query-status')).to.deep.include({ status: 'running', running: true });
      expect(await qmp.execute('query-version')).to.deep.include({ package: 'Debian 1:7.2+dfsg-7+deb12u18+b3' });
      expect(await qmp.execute('stop')).to.deep.equal({});
      expect(await qmp.execute('cont')).to.deep.equal({});
      expect(await qmp.execute('qom-get', { path: '/machine', property: 'usb' })).to.equal(false);
      expect(await qmp.execute('netdev_add', {})).to.deep.equal({});
      expect(await qmp.execute('device_add', {})).to.deep.equal({});
      expect(await qmp.execute('qom-get', {})).to.equal(0);
      expect(await qmp.execute('qom-get', {})).to.equal('52:54:00:12:34:56');
      expect(await qmp.execute('qom-list', {})).to.deep.include({ name: 'nic0', type: 'child<virtio-net-pci>' });
      const filters = await qmp.execute<{ name: string }[]>('query-rx-filter');
      expect(filters[0]!.name).to.equal('nic0');
      const err = await qmp.execute('device_del', { id: 'nosuch' }).catch((e: unknown) => e);
      expect(err)
        .to.be.instanceOf(QmpCommandError)
        .and.include({ errorClass: 'DeviceNotFound', command: 'device_del' });
      expect(await qmp.execute('device_del', { id: 'nic0' })).to.deep.equal({});
      expect(await qmp.execute('quit')).to.deep.equal({});
      await replaying;
      expect(events.map((e) => e.event)).to.deep.equal(['STOP', 'RESUME', 'SHUTDOWN']);
      expect(events[2]!.data).to.deep.equal({ guest: false, reason: 'host-qmp-quit' });
      // QMP's events are QEMU's words only: the layers above add their own marks
      expect(events.every((e) => Object.keys(e).join() === 'event,data,timestamp')).to.equal(true);
      await qmp.close();
    });
  }

  it('resolves falsy returns with exactly their value, answered out of order (no shift by one)', async () => {
    const { qmp, conn } = await connected();
    const values = [false, 0, '', {}, null, [], true, 1];
    const pending = values.map((_, i) => qmp.execute(`cmd${i}`));
    const commands = [];
    for (let i = 0; i < values.length; i++) commands.push(await conn.nextCommand());
    for (const i of [...values.keys()].reverse()) await conn.sendJson({ return: values[i], id: commands[i]!.id });
    expect(await Promise.all(pending)).to.deep.equal(values);
    await qmp.close();
  });

  it('keeps event data, gives {} to events without data, and delivers events that come before the greeting', async () => {
    const qmp = new QmpClient(server.path);
    const events: QmpEvent[] = [];
    qmp.events$.subscribe((e) => events.push(e));
    const connecting = qmp.connect();
    const conn = await server.nextConnection();
    await conn.sendJson(event('EARLY', { n: 1 }));
    await conn.greet();
    const caps = await conn.nextCommand();
    await conn.sendJson(event('BETWEEN'));
    await conn.sendJson({ return: {}, id: caps.id });
    await connecting;
    await conn.sendJson(event('DEVICE_DELETED', { device: 'nic0', path: '/machine/peripheral/nic0' }));
    await pollUntil(() => events.length >= 3, 5000);
    expect(events.map((e) => [e.event, e.data])).to.deep.equal([
      ['EARLY', { n: 1 }],
      ['BETWEEN', {}],
      ['DEVICE_DELETED', { device: 'nic0', path: '/machine/peripheral/nic0' }],
    ]);
    expect(events[0]!.timestamp).to.deep.equal({ seconds: 1, microseconds: 2 });
    await qmp.close();
  });

  it('ignores answers with unknown ids and surfaces an error without id', async () => {
    const { qmp, conn } = await connected();
    const errors: Error[] = [];
    qmp.errors$.subscribe((e) => errors.push(e));
    const p = qmp.execute('query-status');
    const cmd = await conn.nextCommand();
    await conn.sendJson({ return: { wrong: true }, id: 'not-ours' });
    await conn.sendJson({ error: { class: 'GenericError', desc: 'JSON parse error, invalid keyword' } });
    await conn.sendJson({ return: { status: 'running' }, id: cmd.id });
    expect(await p).to.deep.equal({ status: 'running' });
    expect(errors).to.have.length(1);
    expect(errors[0]!.message).to.match(/without id: GenericError: JSON parse error/);
    await qmp.close();
  });

  it('rejects every pending command with QmpDisconnectedError on EOF mid-command, and completes events$', async () => {
    const { qmp, conn } = await connected();
    const done = firstValueFrom(qmp.events$.pipe(toArray()));
    const a = qmp.execute('device_add', { id: 'x' }).catch((e: unknown) => e);
    const b = qmp.execute('query-status').catch((e: unknown) => e);
    await conn.nextCommand();
    await conn.send('{"return": {}, "i'); // half an answer, then EOF
    conn.end();
    for (const err of [await a, await b]) {
      expect(err).to.be.instanceOf(QmpDisconnectedError);
      expect((err as Error).message).to.match(/closed before '(device_add|query-status)' was answered/);
    }
    expect(await done).to.deep.equal([]);
    expect(await qmp.execute('query-status').catch((e: unknown) => e)).to.be.instanceOf(QmpDisconnectedError);
  });

  it('fails with QmpBusyError naming the socket when no greeting comes', async () => {
    const qmp = new QmpClient(server.path, { greetingTimeoutMs: 150 });
    const err = await qmp.connect().catch((e: unknown) => e);
    expect(err).to.be.instanceOf(QmpBusyError);
    expect((err as Error).message)
      .to.include(server.path)
      .and.match(/busy/);
  });

  it('fails with QmpConnectError when nothing listens', async () => {
    const err = await QmpClient.connect(`${server.path}.nope`).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(QmpConnectError);
  });

  it('closes cleanly on garbage: pending commands reject, errors$ says why', async () => {
    const { qmp, conn } = await connected();
    const errors: Error[] = [];
    qmp.errors$.subscribe((e) => errors.push(e));
    const p = qmp.execute('query-status').catch((e: unknown) => e);
    await conn.nextCommand();
    await conn.send('\x00\xffnot json at all\r\n');
    const err = await p;
    expect(err).to.be.instanceOf(QmpDisconnectedError);
    expect((err as Error).message).to.match(/invalid JSON/);
    expect(errors[0]).to.be.instanceOf(QmpProtocolError);
    expect(await qmp.closed).to.be.instanceOf(QmpProtocolError);
  });

  it('closes cleanly on a huge line instead of buffering without end', async () => {
    const qmp = new QmpClient(server.path, { maxLineBytes: 64 * 1024 });
    const connecting = qmp.connect();
    const conn = await server.nextConnection();
    await conn.negotiate();
    await connecting;
    const p = qmp.execute('query-status').catch((e: unknown) => e);
    await conn.send('{"return": "' + 'x'.repeat(200 * 1024));
    expect(await p).to.be.instanceOf(QmpDisconnectedError);
    expect((await qmp.closed)?.message).to.match(/longer than 65536 bytes/);
  });

  it('times out one command, drops its late answer, and stays usable', async () => {
    const { qmp, conn } = await connected();
    const slow = qmp.execute('slow', undefined, { timeoutMs: 50 }).catch((e: unknown) => e);
    const slowCmd = await conn.nextCommand();
    expect(await slow).to.be.instanceOf(QmpTimeoutError);
    await conn.sendJson({ return: 'late', id: slowCmd.id });
    const fast = qmp.execute('fast');
    const fastCmd = await conn.nextCommand();
    await conn.sendJson({ return: 'ok', id: fastCmd.id });
    expect(await fast).to.equal('ok');
    await qmp.close();
  });

  it('nextEvent matches DEVICE_DELETED by data.device, not the virtio-backend one before it', async () => {
    const { qmp, conn } = await connected();
    const deleted = nextEvent(qmp.events$, 'DEVICE_DELETED', forDevice('nic0'), 2000);
    await conn.sendJson(event('DEVICE_DELETED', { path: '/machine/peripheral/nic0/virtio-backend' }));
    await conn.sendJson(event('DEVICE_DELETED', { device: 'nic1', path: '/machine/peripheral/nic1' }));
    await conn.sendJson(event('DEVICE_DELETED', { device: 'nic0', path: '/machine/peripheral/nic0' }));
    expect((await deleted).data).to.deep.equal({ device: 'nic0', path: '/machine/peripheral/nic0' });
    const never = await nextEvent(qmp.events$, 'DEVICE_DELETED', forDevice('nic9'), 50).catch((e: unknown) => e);
    expect(never).to.be.instanceOf(EventTimeoutError);
    const atClose = nextEvent(qmp.events$, 'SHUTDOWN').catch((e: unknown) => e);
    conn.end();
    expect(await atClose).to.be.instanceOf(QmpDisconnectedError);
  });

  it('property: any interleaving of events and answers, in any chunks, resolves each command with its own answer', async () => {
    const seed = Number(process.env.MQH_SEED ?? Date.now() % 1e9);
    const random = prng(seed);
    for (let round = 0; round < 20; round++) {
      const { qmp, conn } = await connected();
      const seen: number[] = [];
      qmp.events$.subscribe((e) => seen.push(e.data.n as number));
      const n = 50;
      const settled = Promise.allSettled(Array.from({ length: n }, (_, i) => qmp.execute('echo', { i })));
      const commands = [];
      for (let i = 0; i < n; i++) commands.push(await conn.nextCommand());
      // answers in random order, each a different falsy-or-not value, with events between them
      const order = commands.map((c, i) => ({ c, i, k: random() })).sort((a, b) => a.k - b.k);
      let text = '';
      let events = 0;
      for (const { c, i } of order) {
        if (random() < 0.5) text += JSON.stringify(event('TICK', { n: events++ })) + '\r\n';
        const value = i % 4 === 0 ? 0 : i % 4 === 1 ? false : i % 4 === 2 ? '' : { i };
        text +=
          JSON.stringify(
            i % 7 === 0 ? { error: { class: 'GenericError', desc: `e${i}` }, id: c.id } : { return: value, id: c.id },
          ) + '\n';
      }
      await conn.send(text, randomChunks(random, 64));
      const results = await settled;
      results.forEach((r, i) => {
        const label = `seed ${seed}, round ${round}, command ${i}`;
        if (i % 7 === 0)
          expect(r.status === 'rejected' && (r.reason as Error).message, label).to.match(new RegExp(`e${i}$`));
        else
          expect(r.status === 'fulfilled' && r.value, label).to.deep.equal(
            i % 4 === 0 ? 0 : i % 4 === 1 ? false : i % 4 === 2 ? '' : { i },
          );
      });
      expect(seen, `seed ${seed}`).to.deep.equal([...Array(events).keys()]);
      await qmp.close();
    }
  });

  it('property: random bytes never crash the process; the connection closes with a reason', async () => {
    const seed = Number(process.env.MQH_SEED ?? Date.now() % 1e9);
    const random = prng(seed);
    for (let round = 0; round < 30; round++) {
      const { qmp, conn } = await connected();
      const p = qmp.execute('query-status').catch((e: unknown) => e);
      await conn.nextCommand();
      const junk = Buffer.from(
        Array.from({ length: 1 + Math.floor(random() * 300) }, () => Math.floor(random() * 256)),
      );
      conn.socket.write(Buffer.concat([junk, Buffer.from('\n')]));
      conn.end();
      const outcome = await p;
      // garbage either closes the connection with a protocol error or (by chance valid JSON) is ignored until EOF
      expect(outcome, `seed ${seed}, round ${round}`).to.be.instanceOf(QmpDisconnectedError);
      await qmp.closed;
    }
  });
});
