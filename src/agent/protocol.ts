/**
 * The agent's control socket: `<state dir>/agent.sock`, a unix socket owned by root, 0600 (a
 * connect needs write permission on it: root only; the state directory is root's, 0711, and lists
 * to no one). One connection per command, one JSON object per line:
 *
 *   agent  > {"hello":"mq-hotplug-agent","version":"0.1.0","protocol":1,"pid":4242,"settings":{}}
 *   client > {"run":["add","vm1","--queues","8"],"cwd":"/root","env":{...},"version":"0.1.0"}
 *   agent  > {"out":"added nic0 to vm1: ..."}   {"err":"note: ..."}   (as the command writes them)
 *   agent  > {"input":true}                     (the command reads stdin: apply -f -)
 *   client > {"input":"{\"nics\":[]}"}
 *   agent  > {"exit":0}
 *
 *   client > {"signal":"SIGINT"}               (Ctrl-C: a watch ends as it would in the CLI)
 *
 * A client of another version is refused before anything runs (the CLI says so, in one line). A
 * signal, or a client that goes away, aborts what can be aborted (a `watch`); an add in flight
 * runs to its end (a second Ctrl-C only ends the client).
 */
import path from 'node:path';

export const PROTOCOL = 1;

export const agentSocket = (stateDir: string): string => path.join(stateDir, 'agent.sock');

/** The environment a command takes from its client: what the program reads for its defaults. */
export const CLIENT_ENV = ['MQ_HOTPLUG_STATE_DIR', 'MQ_HOTPLUG_CONFIG_DIR', 'MQ_HOTPLUG_QEMU'] as const;

/**
 * Settings of a process, not of a command: the agent's own hold for everything it runs. The agent
 * tells its own in its hello; a CLI call whose settings differ runs in its own process (a trace, a
 * fault a test injects, another OVS).
 */
export const PROCESS_ENV = [
  'OVS_RUNDIR',
  'MQ_HOTPLUG_TRACE',
  'MQ_HOTPLUG_IP',
  'MQ_HOTPLUG_TC',
  'MQ_HOTPLUG_OVS_OFCTL',
  'MQ_HOTPLUG_LOCK_TIMEOUT_MS',
  'MQ_HOTPLUG_QMP_TIMEOUT_MS',
  'MQ_HOTPLUG_EVENTLOG_MAX_BYTES',
] as const;

export interface Hello {
  hello: 'mq-hotplug-agent';
  version: string;
  protocol: number;
  pid: number;
  /** its PROCESS_ENV settings, those that are set */
  settings: Record<string, string>;
}

/** The PROCESS_ENV settings of an environment, those that are set. */
export function settingsOf(env: NodeJS.ProcessEnv): Record<string, string> {
  const settings: Record<string, string> = {};
  for (const k of PROCESS_ENV) if (env[k] !== undefined) settings[k] = env[k];
  return settings;
}

export interface RunRequest {
  run: string[];
  cwd: string;
  env: Record<string, string>;
  version: string;
}

export type AgentMessage = Hello | { out: string } | { err: string } | { input: true } | { exit: number };
export type ClientMessage = RunRequest | { input: string } | { signal: string };

/** Splits a stream into lines of JSON; a line that is not JSON ends the connection. */
export function jsonLines<T>(onMessage: (m: T) => void, onBad: () => void): (chunk: Buffer) => void {
  let rest = '';
  return (chunk) => {
    rest += chunk.toString();
    let nl: number;
    while ((nl = rest.indexOf('\n')) >= 0) {
      const line = rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      if (!line) continue;
      let message: T;
      try {
        message = JSON.parse(line) as T;
      } catch {
        return onBad();
      }
      onMessage(message);
    }
  };
}

/** Program options that take a value: what comes after them is not the command. */
const GLOBAL_WITH_VALUE = new Set(['--state-dir', '--config-dir', '--qmp', '--events-qmp']);
/** `agent`'s options that take a value (`agent VM`'s operand is the VM). */
const AGENT_WITH_VALUE = new Set(['--check-interval', '--on', '--exec', '--metrics']);

/** What a command line names, read without the program (the client must not load it). */
export interface CommandLine {
  command?: string;
  /** its first operand (`agent VM`: the VM) */
  operand?: string;
  stateDir?: string;
  /** --trace, or an option before any command (--help, --version): the CLI runs it itself */
  ownProcess: boolean;
}

export function readCommandLine(argv: string[]): CommandLine {
  const line: CommandLine = { ownProcess: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') break;
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    if (GLOBAL_WITH_VALUE.has(flag)) {
      const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
      if (flag === '--state-dir' && value !== undefined) line.stateDir = value;
    } else if (flag === '--trace' || (line.command === undefined && arg.startsWith('-'))) {
      line.ownProcess = true;
      break;
    } else if (line.command === undefined) line.command = arg;
    else if (AGENT_WITH_VALUE.has(flag) && eq < 0) i++;
    else if (!arg.startsWith('-')) line.operand ??= arg;
  }
  return line;
}
