/**
 * Installed like any CLI: `npm run install-cli` (scripts/install.sh) packs this checkout, installs
 * the tarball into a prefix and the bash completion into a directory; the command then runs from
 * the prefix, and bash, sourcing the completion, completes commands, options, VM names and NIC ids.
 * `npm run build:sea` makes one executable file that runs where there is no node at all.
 */
import { expect } from 'chai';
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { QEMU, ROOT, makeBridge, tempDir, vmName } from '../helpers/env.js';

const SEA1 = vmName('sea1'); // this run's own (its taps are host-wide)

describe('install: packed, installed into a prefix, with bash completion', function () {
  this.timeout(180_000);
  let prefix: string;
  let completions: string;

  before(async () => {
    prefix = tempDir('prefix');
    completions = tempDir('completions');
    await execa('bash', [path.join(ROOT, 'scripts/install.sh')], {
      env: { PREFIX: prefix, COMPLETIONS_DIR: completions },
    });
  });

  it('mq-hotplug --version and doctor run from the prefix, with only the prefix and node on PATH', async () => {
    const env = { PATH: `${path.join(prefix, 'bin')}:${path.dirname(process.execPath)}:/usr/sbin:/usr/bin:/sbin:/bin` };
    const version = await execa('mq-hotplug', ['--version'], { env });
    expect(version.stdout).to.equal(JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version);
    const doctor = await execa('mq-hotplug', ['doctor', '--json'], { env, reject: false });
    const checks = JSON.parse(doctor.stdout) as { check: string; status: string }[];
    expect(checks.map((c) => c.check)).to.include.members(['qemu', '/dev/net/tun', 'ip']);
    expect(checks.find((c) => c.check === 'qemu')!.status).to.equal('ok');
  });

  it('bash completes commands, options, choices, VM names (running and defined) and NIC ids', async () => {
    const script = path.join(completions, 'mq-hotplug');
    expect(fs.readFileSync(script, 'utf8')).to.match(/^complete -F _mq_hotplug mq-hotplug$/m);
    // a state directory with a running VM's directory and a config directory with a defined VM
    const state = tempDir('cstate');
    const config = tempDir('cconfig');
    fs.mkdirSync(path.join(state, 'web1'), { mode: 0o700 });
    const def = { version: 1, name: 'db1', spec: { name: 'db1' }, nics: [{ id: 'net0' }, { id: 'net1' }] };
    fs.writeFileSync(path.join(config, 'db1.json'), JSON.stringify(def), { mode: 0o600 });
    const complete = async (line: string) => {
      const words = line.split(' ');
      const bash = `source ${JSON.stringify(script)}
        COMP_WORDS=(${words.map((w) => JSON.stringify(w)).join(' ')}); COMP_CWORD=${words.length - 1}
        _mq_hotplug; printf '%s\\n' "\${COMPREPLY[@]}"`;
      const r = await execa('bash', ['-c', bash], {
        env: {
          PATH: `${path.join(prefix, 'bin')}:${path.dirname(process.execPath)}:/usr/bin:/bin`,
          MQ_HOTPLUG_STATE_DIR: state,
          MQ_HOTPLUG_CONFIG_DIR: config,
        },
      });
      return r.stdout.split('\n').filter(Boolean).sort();
    };
    expect(await complete('mq-hotplug a')).to.deep.equal(['add', 'agent', 'apply']);
    expect(await complete('mq-hotplug add web1 --q')).to.deep.equal(['--queues']);
    expect(await complete('mq-hotplug add web1 --vhost ')).to.deep.equal(['auto', 'off', 'on']);
    expect(await complete('mq-hotplug start db1 --machine q')).to.deep.equal(['q35']);
    expect(await complete('mq-hotplug stop ')).to.deep.equal(['db1', 'web1']);
    expect(await complete('mq-hotplug --trace nics w')).to.deep.equal(['web1']);
    expect(await complete('mq-hotplug remove db1 ')).to.deep.equal(['net0', 'net1']);
    expect(await complete('mq-hotplug apply db1 -f ')).to.be.an('array'); // files: whatever is here
  });

  it('npm run build:sea: one executable that starts a VM, adds a bridged NIC and stops it, with no node on PATH', async () => {
    await execa('node', [path.join(ROOT, 'scripts/build-sea.mjs')], { cwd: ROOT });
    // PATH: the executable, QEMU (its directory also holds node, so it is linked alone), setpriv, ip and tc
    const tools = tempDir('seapath');
    fs.symlinkSync(path.join(ROOT, 'build/sea'), path.join(tools, 'sea'));
    const qemu = (await execa('bash', ['-c', `command -v ${QEMU}`])).stdout;
    fs.mkdirSync(path.join(tools, 'bin'));
    fs.symlinkSync(qemu, path.join(tools, 'bin', path.basename(qemu)));
    // setpriv starts QEMU as the VM's user, which execs QEMU from here: it must pass through
    fs.symlinkSync((await execa('bash', ['-c', 'command -v setpriv'])).stdout, path.join(tools, 'bin', 'setpriv'));
    fs.chmodSync(tools, 0o711);
    fs.chmodSync(path.join(tools, 'bin'), 0o755);
    const state = tempDir('seastate');
    const env = {
      PATH: `${path.join(tools, 'sea')}:${path.join(tools, 'bin')}:/usr/sbin:/sbin`,
      MQ_HOTPLUG_STATE_DIR: state,
      MQ_HOTPLUG_CONFIG_DIR: `${state}-config`,
    };
    const run = (args: string[]) => execa('mq-hotplug', args, { env, extendEnv: false, reject: false });
    const node = await execa('sh', ['-c', 'command -v node'], { env, extendEnv: false, reject: false });
    expect(node.exitCode, `node found at ${node.stdout}`).to.not.equal(0);
    expect((await run(['--version'])).stdout).to.equal(
      JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version,
    );
    const bridge = await makeBridge();
    const started = await run(['start', SEA1, '--cpus', '2', '--memory', '128M', '--qemu', path.basename(qemu)]);
    try {
      expect(started.exitCode, started.stderr).to.equal(0);
      const added = await run(['add', SEA1, '--queues', '4', '--bridge', bridge, '--json']);
      expect(added.exitCode, added.stderr).to.equal(0);
      const nic = JSON.parse(added.stdout) as { tap: string; queues: number };
      expect(nic.queues).to.equal(4);
      const master = fs.readlinkSync(`/sys/class/net/${nic.tap}/master`);
      expect(path.basename(master)).to.equal(bridge);
      const nics = await run(['nics', SEA1, '--json']);
      expect((JSON.parse(nics.stdout) as { tap: string }[]).map((n) => n.tap)).to.deep.equal([nic.tap]);
    } finally {
      const stopped = await run(['stop', SEA1]);
      expect(stopped.exitCode, stopped.stderr).to.equal(0);
    }
  });
});
