/**
 * The CLI's side of the control socket (protocol.ts). bin/mq-hotplug.cjs asks it first, before
 * the program loads: where a host agent serves the state directory, the command runs there, with
 * the agent's warm controllers, and this process only relays its output, input and exit code.
 * Where none does (no socket, or a dead agent's), the CLI runs the command itself, as before.
 */
import fs from 'node:fs';
import path from 'node:path';
import { VERSION } from '../version.js';
import { writeErr, writeOut } from '../util/write.js';
import {
  type AgentMessage,
  CLIENT_ENV,
  type Hello,
  PROTOCOL,
  agentSocket,
  jsonLines,
  readCommandLine,
  settingsOf,
} from './protocol.js';

/** Commands this process runs itself: what only prints what this CLI is. */
const HERE = new Set(['completion', 'help', '__warm', '__complete']);
const HELLO_TIMEOUT_MS = 5000;

/**
 * The control socket the command would go to, or undefined where this process runs it: no
 * command (--help, --version), a command of HERE, --trace, MQ_HOTPLUG_NO_AGENT=1, or no socket
 * in the state directory. (Process settings other than the agent's: see forward.)
 */
export function agentFor(argv: string[], env: NodeJS.ProcessEnv): string | undefined {
  if (env.MQ_HOTPLUG_NO_AGENT === '1') return undefined;
  const { command, operand, stateDir, ownProcess } = readCommandLine(argv);
  if (ownProcess || command === undefined || HERE.has(command) || (command === 'agent' && operand === undefined))
    return undefined;
  const socket = agentSocket(path.resolve(stateDir ?? env.MQ_HOTPLUG_STATE_DIR ?? '/run/mq-hotplug'));
  return fs.existsSync(socket) ? socket : undefined;
}

/**
 * Runs the command through the agent: resolves with its exit code, or undefined where this
 * process runs it instead: no agent listens on the socket (a dead agent's file), or the call's
 * process settings (PROCESS_ENV: a trace, an ip binary, another OVS) are not the agent's.
 */
export async function forward(socket: string, argv: string[], env: NodeJS.ProcessEnv): Promise<number | undefined> {
  const net = await import('node:net'); // only here: a CLI without an agent does not load it
  const clientEnv: Record<string, string> = {};
  for (const k of CLIENT_ENV) if (env[k] !== undefined) clientEnv[k] = env[k];
  return new Promise((resolve) => {
    const conn = net.createConnection(socket);
    let hello: Hello | undefined;
    let done = false;
    const finish = (code: number | undefined, message?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      process.off('SIGINT', interrupt);
      process.off('SIGTERM', interrupt);
      if (message) writeErr(`mq-hotplug: ${message}\n`);
      conn.destroy();
      resolve(code);
    };
    const timer = setTimeout(
      () =>
        finish(
          1,
          `the agent on ${socket} took the connection but did not answer within ${HELLO_TIMEOUT_MS / 1000} s (is it stopped?); MQ_HOTPLUG_NO_AGENT=1 runs without it`,
        ),
      HELLO_TIMEOUT_MS,
    );
    // Ctrl-C: the agent stops what it can (a watch ends, exit 0, as in the CLI); a second one ends us
    let signalled = false;
    const interrupt = (signal: string) => {
      if (signalled || !hello) return finish(130);
      signalled = true;
      send({ signal });
    };
    process.on('SIGINT', interrupt);
    process.on('SIGTERM', interrupt);
    const send = (m: object) => conn.write(`${JSON.stringify(m)}\n`);
    conn.on('error', (e: NodeJS.ErrnoException) => {
      // no agent behind the socket (it died and left its file): this process runs the command
      if (!hello && (e.code === 'ECONNREFUSED' || e.code === 'ENOENT')) finish(undefined);
    });
    conn.on(
      'data',
      jsonLines<AgentMessage>(
        (m) => {
          if (!hello) {
            if (!('hello' in m)) return finish(1, `${socket} is not an mq-hotplug agent's socket`);
            if (m.version !== VERSION || m.protocol !== PROTOCOL)
              return finish(
                2,
                `the agent (pid ${m.pid}) is version ${m.version} and this CLI ${VERSION}: restart the agent ` +
                  `(systemctl restart mq-hotplug), or set MQ_HOTPLUG_NO_AGENT=1 to run without it`,
              );
            if (!sameSettings(settingsOf(env), m.settings ?? {})) return finish(undefined);
            hello = m;
            clearTimeout(timer);
            send({ run: argv, cwd: process.cwd(), env: clientEnv, version: VERSION });
          } else if ('out' in m) writeOut(m.out);
          else if ('err' in m) writeErr(m.err);
          else if ('input' in m) send({ input: fs.readFileSync(0, 'utf8') });
          else if ('exit' in m) finish(m.exit);
        },
        () => finish(1, `the agent on ${socket} sent what is not its protocol`),
      ),
    );
    conn.on('close', () => {
      if (!hello) return finish(undefined);
      finish(
        1,
        `the agent (pid ${hello.pid}) went away before the command finished; what it left half-made is ` +
          `finished or undone by the next command on that VM, or by the agent when it starts again`,
      );
    });
  });
}

function sameSettings(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].every((k) => a[k] === b[k]);
}
