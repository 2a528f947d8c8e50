/**
 * A QMP client on RxJS. The socket is a stream of messages; commands are requests matched to their
 * answers by id (never by order, so any number may be in flight); events are a hot, shared
 * Observable that every consumer filters for itself.
 *
 *   const qmp = new QmpClient('/run/mq-hotplug/vm1/qmp.sock');
 *   qmp.events$.subscribe((e) => console.log(e.event, e.data));  // before connect: sees everything
 *   await qmp.connect();                                           // greeting + qmp_capabilities
 *   const status = await qmp.execute('query-status');              // { running: true, ... }
 *   await qmp.close();
 *
 * `QmpClient.connect(target)` does the first and third line in one.
 */
import net from 'node:net';
import { Observable, Subject } from 'rxjs';
import {
  QmpBusyError,
  QmpCommandError,
  QmpConnectError,
  QmpDisconnectedError,
  QmpError,
  QmpProtocolError,
  QmpTimeoutError,
} from './errors.js';
import { DEFAULT_MAX_LINE_BYTES, LineDecoder } from './framing.js';
import { trace } from '../util/trace.js';
import {
  type QmpEvent,
  type QmpGreeting,
  type QmpMessage,
  isErrorReply,
  isEvent,
  isGreeting,
  isReturn,
} from './messages.js';

export interface QmpClientOptions {
  /** How long to wait for QEMU's greeting after connecting; no greeting means another client holds the monitor. */
  greetingTimeoutMs?: number;
  /** Default per-command timeout; none by default (QMP commands may legitimately take long). */
  commandTimeoutMs?: number;
  maxLineBytes?: number;
}

export interface ExecuteOptions {
  timeoutMs?: number;
}

interface Pending {
  command: string;
  resolve(value: unknown): void;
  reject(error: Error): void;
  timer?: NodeJS.Timeout;
}

type State = 'idle' | 'connecting' | 'ready' | 'closed';

export class QmpClient {
  /** QEMU's events. Hot and shared: subscribe before the command that causes one. */
  readonly events$: Observable<QmpEvent>;
  /** Problems not tied to one command: an error answer without id, a protocol violation. */
  readonly errors$: Observable<QmpError>;
  /** Resolves once the connection is closed, with the reason (undefined after close()). */
  readonly closed: Promise<Error | undefined>;

  private readonly eventSubject = new Subject<QmpEvent>();
  private readonly errorSubject = new Subject<QmpError>();
  private readonly pending = new Map<string, Pending>();
  private socket?: net.Socket;
  private state: State = 'idle';
  private seq = 0;
  private greetingValue?: QmpGreeting;
  private onGreeting?: (g: QmpGreeting) => void;
  private markClosed!: (reason: Error | undefined) => void;

  constructor(
    readonly target: string,
    private readonly options: QmpClientOptions = {},
  ) {
    this.events$ = this.eventSubject.asObservable();
    this.errors$ = this.errorSubject.asObservable();
    this.closed = new Promise((resolve) => (this.markClosed = resolve));
  }

  static async connect(target: string, options?: QmpClientOptions): Promise<QmpClient> {
    const client = new QmpClient(target, options);
    await client.connect();
    return client;
  }

  get greeting(): QmpGreeting {
    if (!this.greetingValue) throw new QmpError('not connected: no greeting yet');
    return this.greetingValue;
  }

  /** QEMU's version from the greeting, e.g. { major: 7, minor: 2, micro: 22, package: '...' }. */
  get version(): { major: number; minor: number; micro: number; package: string } {
    const v = this.greeting.QMP.version;
    return { ...v.qemu, package: v.package };
  }

  get isReady(): boolean {
    return this.state === 'ready';
  }

  /** Connects, reads the greeting and negotiates; resolves when qmp_capabilities is answered. */
  async connect(): Promise<void> {
    if (this.state !== 'idle') throw new QmpError(`connect() called twice on ${this.target}`);
    this.state = 'connecting';
    const socket = openSocket(this.target);
    this.socket = socket;
    messagesOf(socket, this.options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES).subscribe({
      next: (m) => this.dispatch(m),
      // a socket error (QEMU resets the connection as it quits) is a disconnect like EOF
      error: (e: Error) =>
        this.shutdown(e instanceof QmpError ? e : new QmpDisconnectedError(this.target, undefined, e.message)),
      complete: () => this.shutdown(new QmpDisconnectedError(this.target, undefined, 'EOF')),
    });

    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', (e) => reject(new QmpConnectError(this.target, e)));
    });

    const greetingMs = this.options.greetingTimeoutMs ?? 3000;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new QmpBusyError(this.target, greetingMs));
        this.shutdown(new QmpBusyError(this.target, greetingMs));
      }, greetingMs);
      this.onGreeting = () => {
        clearTimeout(timer);
        resolve();
      };
      this.closed.then((reason) => {
        clearTimeout(timer);
        reject(reason ?? new QmpDisconnectedError(this.target, undefined, 'closed before the greeting'));
      });
    });
    await this.send('qmp_capabilities', undefined, {});
    this.state = 'ready';
  }

  /**
   * Runs one command. Resolves with its `return` exactly as QEMU sent it (false, 0, "" and {}
   * included); rejects with QmpCommandError, QmpTimeoutError or QmpDisconnectedError.
   */
  execute<T = unknown>(command: string, args?: object, options: ExecuteOptions = {}): Promise<T> {
    if (this.state !== 'ready') {
      return Promise.reject(
        this.state === 'closed'
          ? new QmpDisconnectedError(this.target, command)
          : new QmpError(`'${command}' before the QMP connection to ${this.target} is ready`),
      );
    }
    return this.send(command, args, options) as Promise<T>;
  }

  /** Closes the connection; pending commands reject with QmpDisconnectedError. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.shutdown(undefined);
    await this.closed;
  }

  private send(command: string, args: object | undefined, options: ExecuteOptions): Promise<unknown> {
    const id = `mqh-${++this.seq}`;
    const message = args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
    return new Promise((resolve, reject) => {
      const entry: Pending = { command, resolve, reject };
      const timeoutMs = options.timeoutMs ?? this.options.commandTimeoutMs;
      if (timeoutMs !== undefined) {
        entry.timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new QmpTimeoutError(command, timeoutMs));
        }, timeoutMs);
      }
      this.pending.set(id, entry);
      const line = JSON.stringify(message);
      trace('qmp', '>', line);
      this.socket!.write(line + '\n');
    });
  }

  private dispatch(message: QmpMessage): void {
    if (isEvent(message)) {
      this.eventSubject.next({ event: message.event, data: message.data ?? {}, timestamp: message.timestamp });
    } else if (isReturn(message) || isErrorReply(message)) {
      const entry = typeof message.id === 'string' ? this.pending.get(message.id) : undefined;
      if (!entry) {
        // An error nobody asked about (QEMU's answer to unparsable input has no id) is surfaced;
        // answers to unknown ids (a command that already timed out) are dropped.
        if (isErrorReply(message) && message.id === undefined) {
          const { class: cls, desc } = message.error;
          this.errorSubject.next(new QmpProtocolError(`QMP error without id: ${cls}: ${desc}`));
        }
        return;
      }
      this.pending.delete(message.id as string);
      clearTimeout(entry.timer);
      if (isReturn(message)) entry.resolve(message.return);
      else entry.reject(new QmpCommandError(entry.command, message.error.class, message.error.desc));
    } else if (isGreeting(message)) {
      if (this.greetingValue) return;
      this.greetingValue = message;
      this.onGreeting?.(message);
    } else {
      this.shutdown(new QmpProtocolError(`not a QMP message: ${JSON.stringify(message).slice(0, 200)}`));
    }
  }

  /** The one place the connection ends: settles everything pending and completes the streams. */
  private shutdown(reason: Error | undefined): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.socket?.destroy();
    if (reason instanceof QmpProtocolError) this.errorSubject.next(reason);
    const why = reason === undefined ? 'closed by client' : reason.message;
    for (const [id, entry] of this.pending) {
      this.pending.delete(id);
      clearTimeout(entry.timer);
      entry.reject(new QmpDisconnectedError(this.target, entry.command, why));
    }
    this.eventSubject.complete();
    this.errorSubject.complete();
    this.markClosed(reason);
  }
}

/** A unix socket path, or host:port (also [v6]:port) for TCP. */
function openSocket(target: string): net.Socket {
  const tcp = /^(?:\[([^\]]+)\]|([^/:]+)):(\d+)$/.exec(target);
  if (tcp) return net.createConnection({ host: tcp[1] ?? tcp[2], port: Number(tcp[3]) });
  return net.createConnection({ path: target });
}

/** The socket as a stream of parsed messages; errors on anything that is not a JSON object. */
function messagesOf(socket: net.Socket, maxLineBytes: number): Observable<QmpMessage> {
  return new Observable<QmpMessage>((subscriber) => {
    const decoder = new LineDecoder(maxLineBytes);
    const onData = (chunk: Buffer) => {
      try {
        for (const line of decoder.push(chunk)) {
          trace('qmp', '<', line);
          let parsed: unknown;
          try {
            parsed = JSON.parse(line);
          } catch {
            throw new QmpProtocolError(`invalid JSON from QEMU: ${line.slice(0, 200)}`);
          }
          if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
            throw new QmpProtocolError(`not a QMP message: ${line.slice(0, 200)}`);
          }
          subscriber.next(parsed as QmpMessage);
        }
      } catch (e) {
        subscriber.error(e);
      }
    };
    let lastError: Error | undefined;
    const onError = (e: Error) => (lastError = e);
    const onClose = () => {
      if (lastError && !subscriber.closed) subscriber.error(lastError);
      else subscriber.complete();
    };
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
    return () => {
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
    };
  });
}
