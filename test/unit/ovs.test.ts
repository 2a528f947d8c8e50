/**
 * The Open vSwitch layer's pieces that need no OVS: VLAN and trunk values, and the OVSDB client
 * against a fake OVSDB server on a real unix socket (framing without delimiters, echo, errors,
 * the wait for ovs-vswitchd). The backend against a real OVS is in test/integration/ovs.test.ts.
 */
import { expect } from 'chai';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { UsageError } from '../../src/errors.js';
import { JsonStream, OvsdbClient, OvsdbError, appliedTarget, applyOps, ovs } from '../../src/host/ovsdb.js';
import { checkTrunks, checkVlan, trunksText } from '../../src/host/validate.js';

describe('VLAN values', () => {
  it('VLAN ids 1-4094; 0, 4095 and words are refused naming the value', () => {
    expect(checkVlan('10')).to.equal(10);
    expect(checkVlan(4094)).to.equal(4094);
    for (const bad of ['0', '4095', 'abc', '-1', '1.5', ''])
      expect(() => checkVlan(bad), bad).to.throw(
        UsageError,
        new RegExp(`^invalid VLAN '${bad}': use an integer from 1 to 4094`),
      );
  });

  it('trunks: lists and ranges, sorted; junk, reversed ranges, out of range and repeats refused', () => {
    expect(checkTrunks('30-32,10, 20')).to.deep.equal([10, 20, 30, 31, 32]);
    expect(checkTrunks([20, '10'])).to.deep.equal([10, 20]);
    expect(trunksText([10, 20, 30, 31, 32])).to.equal('10,20,30-32');
    expect(trunksText(checkTrunks(trunksText([1, 2, 3, 7])))).to.equal('1-3,7');
    const cases: [string, RegExp][] = [
      ['10,x', /'x' is not a VLAN id or a range/],
      ['10,,20', /'' is not a VLAN id or a range/],
      ['20-10', /range 20-10 runs backwards/],
      ['0,10', /0 is out of range/],
      ['4000-4095', /4095 is out of range/],
      ['10,5-12', /VLAN 10 is given twice/],
    ];
    for (const [bad, why] of cases) {
      expect(() => checkTrunks(bad), bad).to.throw(
        UsageError,
        /^invalid trunks '.*': .*; use VLAN ids 1-4094 and ranges/,
      );
      expect(() => checkTrunks(bad), bad).to.throw(why);
    }
  });
});

describe('OVSDB client against a fake OVSDB server', () => {
  let dir: string;
  let server: net.Server;
  let peers: net.Socket[];
  /** What the fake answers: by method, from the request. */
  let answer: (req: { method: string; params: unknown[]; id: number }, socket: net.Socket) => void;

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mqh-ovsdb-'));
    peers = [];
    server = net.createServer((socket) => {
      peers.push(socket);
      const stream = new JsonStream();
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => {
        for (const text of stream.push(chunk)) answer(JSON.parse(text), socket);
      });
    });
    await new Promise<void>((resolve) => server.listen(path.join(dir, 'db.sock'), resolve));
  });
  afterEach(async () => {
    for (const p of peers) p.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const reply = (socket: net.Socket, id: number, result: unknown) =>
    socket.write(JSON.stringify({ id, result, error: null }));
  const cfgUpdate = (cfg: number) => ({ Open_vSwitch: { row1: { new: { cur_cfg: cfg } } } });

  it('splits back-to-back messages cut anywhere (braces inside strings too), answers echo, and maps results to requests', async () => {
    const echoes: unknown[] = [];
    answer = (req, socket) => {
      if (req.method === 'monitor') {
        reply(socket, req.id, cfgUpdate(0));
        return;
      }
      if (req.method === 'transact') {
        // an echo request, then the answer, written byte by byte with no delimiter between them
        const text =
          JSON.stringify({ method: 'echo', params: ['{not a brace}'], id: 'e1' }) +
          JSON.stringify({ id: req.id, result: [{ rows: [{ name: 'b{r}"0', _uuid: ['uuid', 'u1'] }] }], error: null });
        for (const c of text) socket.write(c);
        return;
      }
      echoes.push(req);
    };
    const db = await OvsdbClient.connect(path.join(dir, 'db.sock'));
    const rows = await db.select('Bridge', [], ['name']);
    expect(rows).to.deep.equal([{ name: 'b{r}"0', _uuid: ['uuid', 'u1'] }]);
    await new Promise((r) => setTimeout(r, 50));
    expect(echoes).to.deep.equal([{ result: ['{not a brace}'], error: null, id: 'e1' }]);
    db.close();
  });

  it('a failed operation names itself and its index; waitApplied resolves when cur_cfg reaches the target, and fails when the connection goes', async () => {
    answer = (req, socket) => {
      if (req.method === 'monitor') {
        reply(socket, req.id, cfgUpdate(4));
        return;
      }
      const ops = req.params.slice(1) as { op: string }[];
      if (ops[0]!.op === 'wait') {
        reply(socket, req.id, [{ error: 'timed out', details: 'wait' }, null]);
        return;
      }
      reply(socket, req.id, [{ count: 1 }, { rows: [{ next_cfg: 5 }] }]);
      // ovs-vswitchd applies it a moment later: the monitor says so
      setTimeout(() => socket.write(JSON.stringify({ method: 'update', params: ['cfg', cfgUpdate(5)], id: null })), 20);
    };
    const db = await OvsdbClient.connect(path.join(dir, 'db.sock'));
    const failed = await db.transact([{ op: 'wait', table: 'Bridge' }, { op: 'insert' }]).catch((e: unknown) => e);
    expect(failed).to.be.instanceOf(OvsdbError);
    expect(failed).to.deep.include({ failedOp: 0, message: 'OVSDB wait failed: timed out (wait)' });
    const target = appliedTarget(await db.transact(applyOps()));
    expect(target).to.equal(5);
    await db.waitApplied(target, 2000);
    const never = db.waitApplied(9, 5000).catch((e: unknown) => e);
    for (const p of peers) p.destroy();
    expect(await never).to.be.instanceOf(OvsdbError);
    expect(db.closed).to.equal(true);
  });

  it('no server: one line naming the socket and OVS_RUNDIR; OVSDB notation to plain values', async () => {
    const missing = path.join(dir, 'none', 'db.sock');
    const e = await OvsdbClient.connect(missing).catch((err: unknown) => err);
    expect((e as Error).message).to.equal(
      `no Open vSwitch database answers at ${missing} (is ovsdb-server running? OVS_RUNDIR names its directory)`,
    );
    expect(ovs.value(['set', []])).to.equal(undefined);
    expect(ovs.value(['set', [1, 2]])).to.deep.equal([1, 2]);
    expect(ovs.list(7)).to.deep.equal([7]);
    expect(ovs.value(['map', [['a', 'b']]])).to.deep.equal({ a: 'b' });
    expect(ovs.value(['uuid', 'x'])).to.equal('x');
  });
});
