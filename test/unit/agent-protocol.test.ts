/**
 * The host agent's control socket (src/agent/control.ts, protocol.ts) on a real unix socket, with
 * a stand-in program: how a command line is read without the program, and a client that goes away
 * while its command waits for its standard input. (The CLI through a real agent: integration/agent.test.ts.)
 */
import { expect } from 'chai';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { serveControl } from '../../src/agent/control.js';
import { type AgentMessage, jsonLines, readCommandLine } from '../../src/agent/protocol.js';
import { readInput } from '../../src/util/request.js';
import { pollUntil } from '../../src/util/time.js';
import { VERSION } from '../../src/version.js';

describe('agent control protocol', () => {
  it('reads a command line as the program would: global options and their values, the first operand, what runs here', () => {
    expect(readCommandLine(['--state-dir', '/x', 'add', 'vm1', '--queues', '8'])).to.deep.equal({
      ...{ command: 'add', operand: 'vm1', stateDir: '/x', ownProcess: false },
    });
    expect(readCommandLine(['--state-dir=/y', '--qmp', 'add', 'nics'])).to.deep.include({
      ...{ command: 'nics', stateDir: '/y' }, // --qmp's value is not the command
    });
    expect(readCommandLine(['agent', '--metrics', '9100'])).to.deep.equal({ command: 'agent', ownProcess: false });
    expect(readCommandLine(['agent', '--on', 'x', 'vm1'])).to.deep.include({ command: 'agent', operand: 'vm1' });
    expect(readCommandLine(['--version']).ownProcess).to.equal(true);
    expect(readCommandLine(['add', 'vm1', '--trace']).ownProcess).to.equal(true);
    expect(readCommandLine([])).to.deep.equal({ ownProcess: false });
  });

  it('a client that goes away while its command waits for its stdin: the read fails, the command ends', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mqh-control-'));
    let failed: Error | undefined;
    let ended = false;
    const server = await serveControl(dir, async () => {
      try {
        await readInput();
      } catch (e) {
        failed = e as Error;
      }
      ended = true;
    });
    try {
      const conn = net.createConnection(server.socket);
      const asked = new Promise<void>((resolve) =>
        conn.on(
          'data',
          jsonLines<AgentMessage>(
            (m) => {
              if ('hello' in m)
                conn.write(
                  `${JSON.stringify({ run: ['apply', 'vm1', '-f', '-'], cwd: dir, env: {}, version: VERSION })}\n`,
                );
              else if ('input' in m) resolve();
            },
            () => {},
          ),
        ),
      );
      await asked;
      conn.destroy();
      await pollUntil(() => ended, 5000, 5);
      expect(failed?.message).to.equal('the client went away before it sent its standard input');
      expect(await pollUntil(() => server.running === 0, 5000, 5)).to.equal(true);
    } finally {
      await server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
