/**
 * The command line: thin commander commands over the layers below. Each action loads its
 * implementation on demand, so `--version` or `vms` does not pay for what `add` needs. The CLI
 * process runs it (main.ts), and so does the agent for each client of its control socket
 * (agent/control.ts), with the client's environment and working directory.
 */
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { setExitCode } from '../util/request.js';
import { VERSION } from '../version.js';
import { writeErr, writeOut } from '../util/write.js';

/** What commands run: imported on the first action only (see back.ts). */
const back = () => import('./back.js');
const commands = async () => (await back()).commands();
const watchCommands = async () => (await back()).watch();
const completion = async () => (await back()).completion();
const hostAgent = async () => (await back()).agent();

/** Where the program runs: the CLI's own process, or the agent for a client. */
export interface ProgramContext {
  env: Record<string, string | undefined>;
  /** In the agent: the client's working directory, which relative paths are resolved against. */
  cwd?: string;
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** The options the user gave on the command line (not defaults): what `start` changes in a saved spec. */
function givenOptions(cmd: Command): Set<string> {
  return new Set(
    cmd.options
      .map((o) => o.attributeName())
      .filter((k) => !['json', 'ifNotRunning'].includes(k) && cmd.getOptionValueSource(k) === 'cli'),
  );
}

export function buildProgram({ env, cwd }: ProgramContext = { env: process.env }): Command {
  // a path as the user meant it: from the client's directory, in the agent
  const at = (p: string) => (cwd === undefined || p === '-' ? p : path.resolve(cwd, p));
  const paths = (value: string, previous: string[] = []) => [...previous, at(value)];
  const program = new Command('mq-hotplug')
    .description('Hot-plug multiqueue virtio-net NICs into running QEMU VMs over QMP')
    .version(VERSION)
    .option(
      '--state-dir <dir>',
      'state directory (env MQ_HOTPLUG_STATE_DIR)',
      at,
      env.MQ_HOTPLUG_STATE_DIR ?? '/run/mq-hotplug',
    )
    .option(
      '--config-dir <dir>',
      'where VM definitions are kept (env MQ_HOTPLUG_CONFIG_DIR)',
      at,
      env.MQ_HOTPLUG_CONFIG_DIR ?? '/var/lib/mq-hotplug',
    )
    .option(
      '--qmp <path>',
      'control QMP socket of a VM not started by mq-hotplug (the <vm> argument is then only a label)',
      at,
    )
    .option('--events-qmp <path>', 'events QMP socket of such a VM, for watch', at)
    .option('--trace', 'print every QMP message and ip command to stderr, timestamped (env MQ_HOTPLUG_TRACE=1)')
    .configureOutput({ writeOut, writeErr }) // not process.stdout: see util/write.ts
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .hook('preAction', async (cmd, action) => {
      // in the agent, for a client: its trace would be every client's, and an agent runs on its own
      if (cwd !== undefined && (cmd.opts().trace || (action.name() === 'agent' && !action.args.length)))
        throw new (await back()).UsageError(
          `'${action.name()}${cmd.opts().trace ? ' --trace' : ''}' runs in the CLI's own process, not in the agent`,
        );
      if (cmd.opts().trace) (await back()).setTrace(true);
    });

  program
    .command('start <vm>')
    .description(
      'start a VM with only QMP monitors, and its saved NICs where it has a definition; a new VM is defined from the options',
    )
    .option('--cpus <n>', 'vCPUs', '2')
    .option('--memory <size>', 'memory, e.g. 512M or 1G', '1G')
    .addOption(new Option('--machine <type>', 'machine type').choices(['pc', 'q35']).default('pc'))
    .addOption(
      new Option('--accel <accel>', 'accelerator (auto: KVM only where it can really run a guest)')
        .choices(['auto', 'kvm', 'tcg'])
        .default('auto'),
    )
    .option('--disk <path>', 'virtio disk (repeatable)', paths, [])
    .option('--kernel <path>', 'kernel to boot', at)
    .option('--initrd <path>', 'initrd', at)
    .option('--append <cmdline>', 'kernel command line')
    .option('--serial <socket>', 'unix socket for the guest serial console (logged to serial.log)', at)
    .option(
      '--hotplug-slots <n>',
      'q35: spare pcie-root-ports, one per hot-pluggable NIC (pc uses free pci.0 slots)',
      '8',
    )
    .option('--qemu <path>', 'QEMU binary (env MQ_HOTPLUG_QEMU)', env.MQ_HOTPLUG_QEMU ?? 'qemu-system-x86_64')
    .option('--qemu-arg <arg>', 'extra QEMU argument, passed as is (repeatable)', collect, [])
    .option('--bridge <bridge>', 'default bridge for add')
    .option(
      '--run-as <user>',
      "the user QEMU runs as (default: the VM's own, mqh-<vm>, made on its first start); 'root' only with a warning",
    )
    .option('--if-not-running', 'a VM that is already running is not an error (for service managers)')
    .option('--json', 'print the VM record as JSON')
    .action(async (vm, opts, cmd) => (await commands()).start(vm, opts, cmd.optsWithGlobals(), givenOptions(cmd)));

  program
    .command('stop <vm>')
    .description('quit the VM (SIGTERM/SIGKILL after the timeout) and remove its runtime state; its definition stays')
    .option('--timeout <seconds>', 'how long to wait for QEMU to exit', '10')
    .option('--json', 'JSON output')
    .action(async (vm, opts, cmd) => (await commands()).stop(vm, opts, cmd.optsWithGlobals()));

  program
    .command('vms')
    .description('list VMs with their live state')
    .option('--json', 'JSON output')
    .action(async (opts, cmd) => (await commands()).vms(opts, cmd.optsWithGlobals()));

  program
    .command('doctor')
    .description('check the host: QEMU, /dev/net/tun, vhost-net, KVM, ip, bridges')
    .option('--json', 'JSON output')
    .option('--qemu <path>', 'QEMU binary (env MQ_HOTPLUG_QEMU)', env.MQ_HOTPLUG_QEMU ?? 'qemu-system-x86_64')
    .action(async (opts, cmd) => (await commands()).doctor(opts, cmd.optsWithGlobals()));

  program
    .command('qmp <vm> <command> [args-json]')
    .description("send one QMP command to the VM's control monitor and print its return as JSON")
    .action(async (vm, command, args, _opts, cmd) => (await commands()).qmp(vm, command, args, cmd.optsWithGlobals()));

  program
    .command('add <vm>')
    .description('hot-plug a multiqueue virtio-net NIC, attach its tap to a bridge and set it up')
    .requiredOption('--queues <n>', 'queue pairs (1-256); the guest sees this many combined channels')
    .option('--bridge <bridge>', "bridge for the tap (default: the VM's --bridge)")
    .option('--no-bridge', 'do not attach the tap to any bridge, only set it up')
    .option('--ifname <tap>', 'tap name (at most 15 characters)')
    .option('--mac <mac>', 'MAC address (default: 52:54:00:xx:xx:xx, unique in the VM)')
    .option('--id <id>', 'device id (default: nicN)')
    .addOption(
      new Option('--vhost <mode>', 'vhost-net (auto: on where /dev/vhost-net is usable)')
        .choices(['auto', 'on', 'off'])
        .default('auto'),
    )
    .option('--mtu <n>', "MTU told to the guest (68-65535, at most the bridge's); the tap always takes the bridge's")
    .option('--rate <mbit>', 'rate limit in Mbit/s, both directions (tc on a Linux bridge; QoS and a meter on OVS)')
    .option('--vlan <id>', 'Open vSwitch: an access port on VLAN 1-4094; with --trunks, the native VLAN (untagged)')
    .option('--trunks <list>', 'Open vSwitch: a trunk carrying these VLANs tagged, like 10,20,30-40')
    .option('--wait-guest [seconds]', 'wait until the guest driver has taken the NIC (default 30 s)')
    .option('--transient', "do not keep the NIC in the VM's definition: it lasts only as long as the running VM")
    .option('--dry-run', 'print the QMP commands and host commands that would run, change nothing')
    .option('--json', 'JSON output')
    .action(async (vm, opts, cmd) => (await commands()).add(vm, opts, cmd.optsWithGlobals()));

  program
    .command('apply <vm>')
    .description("make the VM's NICs exactly those of a JSON spec: add, remove, replace, change in place")
    .requiredOption('-f, --file <file>', 'the spec: {"nics": [{"id": "net0", "queues": 8, ...}]} (- for stdin)', at)
    .option('--timeout <seconds>', 'how long to wait for the guest to release each removed NIC', '10')
    .option('--dry-run', 'print what would change, change nothing')
    .option('--json', 'JSON output: {changed, added, removed, replaced, updated, unchanged}')
    .action(async (vm, opts, cmd) => (await commands()).apply(vm, opts, cmd.optsWithGlobals()));

  program
    .command('undefine <vm>')
    .description("forget a stopped VM's definition (its saved spec and NICs)")
    .option('--json', 'JSON output')
    .action(async (vm, opts, cmd) => (await commands()).undefine(vm, opts, cmd.optsWithGlobals()));

  program
    .command('remove <vm> <nic>')
    .description('hot-unplug a NIC given by id, tap name or MAC')
    .option('--timeout <seconds>', 'how long to wait for the guest to release the device', '10')
    .option('--transient', "leave the VM's definition as it is: the NIC comes back at the next start")
    .option('--json', 'JSON output')
    .action(async (vm, nic, opts, cmd) => (await commands()).remove(vm, nic, opts, cmd.optsWithGlobals()));

  program
    .command('nics <vm>')
    .description("list the VM's NICs: QOM joined with the host's taps, with drift from the record")
    .option('--json', 'JSON output')
    .action(async (vm, opts, cmd) => (await commands()).nics(vm, opts, cmd.optsWithGlobals()));

  program
    .command('watch <vm>')
    .description("print the VM's events (QEMU's and the controller's) until it stops")
    .option('--json', 'one JSON object per line')
    .option(
      '--on <event>',
      'with --exec: run a hook for this event (repeatable, pairs with --exec in order)',
      collect,
      [],
    )
    .option(
      '--exec <command>',
      'hook command: argv split on spaces, no shell; the event as JSON on stdin and MQH_* env',
      collect,
      [],
    )
    .option('--reconcile', 'react: finish unplugs the guest did, re-attach taps that lost their bridge')
    .option('--follow', 'when the VM stops, wait for a VM of that name to start again')
    .option('--check-interval <seconds>', 'with --reconcile: how often taps are checked besides on events', '5')
    .action(async (vm, opts, cmd) => (await watchCommands()).watch(vm, opts, cmd.optsWithGlobals()));

  program
    .command('agent [vm]')
    .description(
      'long-running reactions: with no VM, for every VM of the host (and the CLI runs its commands there); with one, for that VM',
    )
    .option('--check-interval <seconds>', 'how often taps are checked besides on events and link changes', '5')
    .option('--on <event>', 'with --exec: run a hook for this event of any VM (repeatable)', collect, [])
    .option('--exec <command>', 'hook command, as for watch (repeatable, pairs with --on)', collect, [])
    .option('--start-defined', 'with no VM: start every defined VM that is not running (at boot)')
    .option('--no-reconcile', 'with no VM: follow events (metrics, hooks) and serve the CLI, but change nothing')
    .option(
      '--metrics <where>',
      'with no VM: serve Prometheus metrics on a port (127.0.0.1), host:port or a unix socket',
    )
    .action(async (vm: string | undefined, opts, cmd) => {
      if (vm === undefined) return (await hostAgent()).hostAgent(opts, cmd.optsWithGlobals(), runProgram);
      if (opts.startDefined || opts.metrics !== undefined || !opts.reconcile)
        throw new (await back()).UsageError(
          '--start-defined, --metrics and --no-reconcile are for the host agent: give no VM',
        );
      return (await watchCommands()).watch(
        vm,
        { ...opts, reconcile: true, follow: true, quiet: true },
        cmd.optsWithGlobals(),
      );
    });

  program
    .command('completion <shell>')
    .description("print a completion script: 'bash' (source <(mq-hotplug completion bash))")
    .action(async (shell: string) => {
      if (shell !== 'bash') throw new (await back()).UsageError(`invalid shell '${shell}': use bash`);
      writeOut((await completion()).bashCompletion(program));
    });

  // for the build's V8 code cache (scripts/bundle.mjs): loads every command's modules, so that
  // their top-level code is compiled into the cache, and formats the help; runs nothing
  program.command('__warm', { hidden: true }).action(async () => {
    await Promise.all([commands(), watchCommands(), completion()]);
    program.helpInformation();
  });

  // for the completion script: VM names and NIC ids from the state and config directories
  program
    .command('__complete <what> [vm]', { hidden: true })
    .action(async (what: string, vm: string | undefined, _opts, cmd) =>
      (await completion()).completeWords(what, vm, cmd.optsWithGlobals()),
    );

  return program;
}

/** Runs one command line (argv without node and the script); errors become one line and an exit code. */
export async function runProgram(argv: string[], context?: ProgramContext): Promise<void> {
  try {
    await buildProgram(context).parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      // help and version exit 0; commander already printed its own one-line error
      setExitCode(e.exitCode === 0 ? 0 : 2);
      return;
    }
    (await back()).fail(e);
  }
}
