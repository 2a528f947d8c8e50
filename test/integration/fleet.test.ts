/**
 * Fleet tools: the example Ansible playbook (examples/ansible/nics.yml) run with Debian's
 * ansible-core against this host (first run changed, second run unchanged), and the host agent's
 * systemd unit checked by systemd-analyze (systemd is not PID 1 on these machines: it cannot be
 * run; what it runs, `agent --start-defined`, is tested in agent.test.ts).
 */
import { expect } from 'chai';
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, ROOT, cli, configDirOf, makeBridge, tempDir, trackLink, vmName } from '../helpers/env.js';

const AV = vmName('av'); // this run's own (its taps are host-wide)

describe('fleet: the Ansible example and the systemd unit', function () {
  this.timeout(180_000);

  it('the Ansible playbook ensures a VM NICs with apply: changed on the first run, unchanged on the second', async function () {
    const state = tempDir();
    const env = { MQ_HOTPLUG_STATE_DIR: state, MQ_HOTPLUG_CONFIG_DIR: configDirOf(state) };
    const bridge = await makeBridge();
    const started = await cli(['start', AV, '--memory', '128M', '--accel', 'tcg', '--bridge', bridge], env);
    expect(started.exitCode, started.stderr).to.equal(0);
    try {
      const vars = path.join(tempDir('ansible'), 'vars.json');
      fs.writeFileSync(
        vars,
        JSON.stringify({
          vm: AV,
          mq_hotplug: CLI,
          mq_hotplug_env: env,
          nics: [
            { id: 'net0', queues: 4 },
            { id: 'net1', queues: 2, rate: 100 },
          ],
        }),
      );
      const play = () =>
        execa(
          'ansible-playbook',
          ['-i', 'localhost,', '-c', 'local', path.join(ROOT, 'examples/ansible/nics.yml'), '-e', `@${vars}`],
          {
            reject: false,
            env: {
              ANSIBLE_NOCOLOR: '1',
              ANSIBLE_LOCALHOST_WARNING: 'false',
              ANSIBLE_INVENTORY_UNPARSED_WARNING: 'false',
            },
          },
        );
      const recap = (out: string) =>
        /localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=0\s+failed=(\d+)/.exec(out)?.slice(1).map(Number);
      const first = await play();
      expect(first.exitCode, first.stdout + first.stderr).to.equal(0);
      expect(recap(first.stdout)?.slice(1), first.stdout).to.deep.equal([1, 0]); // changed=1 failed=0
      ['net0', 'net1'].forEach((id) => trackLink(`${AV}-${id}`));
      const second = await play();
      expect(second.exitCode, second.stdout + second.stderr).to.equal(0);
      expect(recap(second.stdout)?.slice(1), second.stdout).to.deep.equal([0, 0]); // changed=0 failed=0
      const nics = JSON.parse((await cli(['nics', AV, '--json'], env)).stdout) as {
        id: string;
        queues: number;
        rate: number | null;
      }[];
      expect(nics.map((n) => [n.id, n.queues, n.rate])).to.deep.equal([
        ['net0', 4, null],
        ['net1', 2, 100],
      ]);
    } finally {
      await cli(['stop', AV], env);
    }
  });

  it('the systemd unit of the host agent passes systemd-analyze verify', async () => {
    const dir = tempDir('unit');
    // pointing at this checkout's CLI (verify checks that the binaries exist)
    const unit = fs
      .readFileSync(path.join(ROOT, 'examples/systemd/mq-hotplug.service'), 'utf8')
      .replaceAll('/usr/local/bin/mq-hotplug', CLI);
    const file = path.join(dir, 'mq-hotplug.service');
    fs.writeFileSync(file, unit);
    const r = await execa('systemd-analyze', ['verify', file], { reject: false });
    const ours = r.stderr.split('\n').filter((l) => l.includes('mq-hotplug.service'));
    expect(ours, r.stderr).to.deep.equal([]);
    expect(r.exitCode, r.stderr).to.equal(0);
    // and it is what it says: one agent that starts the defined VMs, and a restart that leaves them running
    expect(unit).to.match(new RegExp(`^ExecStart=${CLI} agent --start-defined --metrics 127.0.0.1:9190$`, 'm'));
    expect(unit).to.match(/^KillMode=process$/m);
    expect(fs.existsSync(path.join(ROOT, 'examples/systemd/mq-hotplug@.service')), 'no per-VM template').to.equal(
      false,
    );
  });
});
