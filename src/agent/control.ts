/**
 * The agent's side of the control socket (protocol.ts): each connection runs one command line in
 * this process, through the same program as the CLI (cli/program.ts), for that client: what the
 * command writes, reads and exits with is the client's (util/request.ts). Commands of different
 * clients run side by side; the VM locks order them as they order CLI processes.
 */
import fs from 'node:fs';
import net from 'node:net';
import { StateError } from '../errors.js';
import { socketListens } from '../qemu/launcher.js';
import { type Requester, runFor } from '../util/request.js';
import { VERSION } from '../version.js';
import { pollUntil } from '../util/time.js';
import {
  type ClientMessage,
  type Hello,
  PROTOCOL,
  type RunRequest,
  agentSocket,
  jsonLines,
  readCommandLine,
  settingsOf,
} from './protocol.js';

export interface ControlServer {
  readonly socket: string;
  /** Commands running now. */
  readonly running: number;
  close(graceMs?: number): Promise<void>;
}

/** Listens on the state directory's agent.sock (0600); refuses where another agent answers there. */
/** Runs one command line for a client (cli/program.ts's runProgram, handed down: see run.ts). */
export type RunProgram = (
  argv: string[],
  context: { env: Record<string, string | undefined>; cwd?: string },
) => Promise<void>;

export async function serveControl(
  stateDir: string,
  runProgram: RunProgram,
  served: (command: string, exitCode: number) => void = () => {},
): Promise<ControlServer> {
  const socket = agentSocket(stateDir);
  if (await socketListens(socket)) throw new StateError(`another agent already serves ${stateDir} (on ${socket})`);
  fs.rmSync(socket, { force: true }); // a dead agent's
  // each connection with the abort of its command: a stopping agent ends the watches first
  const open = new Map<net.Socket, AbortController>();
  const server = net.createServer((conn) => {
    const abort = new AbortController();
    open.set(conn, abort);
    void serve(conn, abort, runProgram, served).finally(() => open.delete(conn));
  });
  const oldMask = process.umask(0o077);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socket, resolve);
    });
  } finally {
    process.umask(oldMask);
  }
  fs.chmodSync(socket, 0o600);
  return {
    socket,
    get running() {
      return open.size;
    },
    /** No new commands; watches end; other commands get up to `graceMs` to finish, then their clients are cut off. */
    async close(graceMs = 10_000) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      fs.rmSync(socket, { force: true });
      for (const abort of open.values()) abort.abort();
      await pollUntil(() => open.size === 0, graceMs, 20);
      for (const conn of open.keys()) conn.destroy();
      await closed;
    },
  };
}

async function serve(
  conn: net.Socket,
  abort: AbortController,
  runProgram: RunProgram,
  served: (command: string, exitCode: number) => void,
): Promise<void> {
  const send = (m: object) => {
    if (!conn.destroyed) conn.write(`${JSON.stringify(m)}\n`);
  };
  let input: { resolve: (text: string) => void; reject: (e: Error) => void } | undefined;
  const request = await new Promise<RunRequest | undefined>((resolve) => {
    conn.on('error', () => {});
    conn.on('close', () => {
      abort.abort();
      input?.reject(new Error('the client went away before it sent its standard input'));
      resolve(undefined);
    });
    conn.on(
      'data',
      jsonLines<ClientMessage>(
        (m) => {
          if ('run' in m) resolve(m);
          else if ('input' in m) input?.resolve(m.input);
          else if ('signal' in m) abort.abort();
        },
        () => conn.destroy(),
      ),
    );
    const hello: Hello = {
      ...{ hello: 'mq-hotplug-agent', version: VERSION, protocol: PROTOCOL, pid: process.pid },
      settings: settingsOf(process.env),
    };
    send(hello);
  });
  if (!request) return;
  const client: Requester = {
    out: (text) => send({ out: text }),
    err: (text) => send({ err: text }),
    readInput: () =>
      new Promise((resolve, reject) => {
        if (conn.destroyed) return reject(new Error('the client went away before it sent its standard input'));
        input = { resolve, reject };
        send({ input: true });
      }),
    signal: abort.signal,
  };
  await runFor(client, async () => {
    if (request.version !== VERSION) {
      client.err(`mq-hotplug: this agent is version ${VERSION} and the CLI ${request.version}\n`);
      client.exitCode = 2;
    } else await runProgram(request.run, { env: request.env, cwd: request.cwd });
  });
  send({ exit: client.exitCode ?? 0 });
  served(commandOf(request.run), client.exitCode ?? 0);
  conn.end();
}

/** The command's name, for the metrics. */
function commandOf(argv: string[]): string {
  const { command } = readCommandLine(argv);
  return command === undefined ? 'none' : /^[a-z_]+$/.test(command) ? command : 'unknown';
}
