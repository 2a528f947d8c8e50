/**
 * Open vSwitch's database, spoken directly: OVSDB's JSON-RPC (RFC 7047) over its unix socket, as
 * OVS's python IDL and libovsdb do. One `ovs-vsctl` process costs about 46 ms here, more than a
 * whole add; a transaction on a connection that stays open costs a fraction of a millisecond.
 *
 * The socket is where OVS's own tools look: $OVS_RUNDIR/db.sock (default /var/run/openvswitch),
 * so mq-hotplug works against a private OVS exactly as ovs-vsctl does.
 *
 * ovs-vswitchd applies a change after the database took it; a writer that needs it applied bumps
 * Open_vSwitch's next_cfg in its transaction and waits until cur_cfg reaches it (what ovs-vsctl
 * does without --no-wait). The client keeps a monitor on cur_cfg, so that wait is an event.
 */
import net from 'node:net';
import path from 'node:path';
import { MqHotplugError } from '../errors.js';
import { trace } from '../util/trace.js';

export const OVS_DB = 'Open_vSwitch';

/** Where OVS's database answers: $OVS_RUNDIR/db.sock, as ovs-vsctl finds it. */
export function ovsdbSocket(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(env.OVS_RUNDIR || '/var/run/openvswitch', 'db.sock');
}

/** The one line for a socket where no OVSDB answers. */
export const noDatabase = (socketPath: string) =>
  `no Open vSwitch database answers at ${socketPath} (is ovsdb-server running? OVS_RUNDIR names its directory)`;

export class OvsdbError extends MqHotplugError {
  override name = 'OvsdbError';
  constructor(
    message: string,
    /** the index of the operation that failed, for a transaction */
    readonly failedOp?: number,
  ) {
    super(message);
  }
}

/** An OVSDB operation (RFC 7047 section 5.2), as JSON. */
export type OvsdbOp = Record<string, unknown> & { op: string };
/** A row as `select` returns it: columns in OVSDB's JSON notation. */
export type OvsdbRow = Record<string, unknown>;

/** OVSDB's notations: a set, a map, a uuid and a named uuid. */
export const ovs = {
  set: (items: unknown[]) => ['set', items],
  map: (o: Record<string, string>) => ['map', Object.entries(o)],
  uuid: (u: string) => ['uuid', u],
  named: (n: string) => ['named-uuid', n],
  /** A value as plain JS: an optional column's empty set is undefined, a set an array, a map an object. */
  value(v: unknown): unknown {
    if (!Array.isArray(v)) return v;
    const [kind, body] = v as [string, unknown];
    if (kind === 'set') {
      const items = (body as unknown[]).map((x) => ovs.value(x));
      return items.length === 0 ? undefined : items;
    }
    if (kind === 'map') return Object.fromEntries((body as [string, unknown][]).map(([k, x]) => [k, ovs.value(x)]));
    if (kind === 'uuid' || kind === 'named-uuid') return body;
    return v;
  },
  /** A set column as an array (a one-element set comes as a bare atom). */
  list(v: unknown): unknown[] {
    const plain = ovs.value(v);
    return plain === undefined ? [] : Array.isArray(plain) ? plain : [plain];
  },
};

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

/** Splits a text stream into the JSON texts OVSDB writes back to back (no delimiter between them). */
export class JsonStream {
  private buffer = '';
  private depth = 0;
  private inString = false;
  private escaped = false;
  private scanned = 0;

  push(chunk: string): string[] {
    this.buffer += chunk;
    const out: string[] = [];
    let start = 0;
    for (let i = this.scanned; i < this.buffer.length; i++) {
      const c = this.buffer[i];
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === '\\') this.escaped = true;
        else if (c === '"') this.inString = false;
      } else if (c === '"') this.inString = true;
      else if (c === '{' || c === '[') this.depth++;
      else if (c === '}' || c === ']') {
        if (--this.depth === 0) {
          out.push(this.buffer.slice(start, i + 1));
          start = i + 1;
        }
      } else if (this.depth === 0 && /\s/.test(c!)) start = i + 1;
    }
    this.buffer = this.buffer.slice(start);
    this.scanned = this.buffer.length;
    return out;
  }
}

/** One connection to ovsdb-server. */
export class OvsdbClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closedError: Error | undefined;
  private curCfg = -1;
  private readonly cfgWaiters: { target: number; resolve: () => void; reject: (e: Error) => void }[] = [];

  private constructor(
    private readonly socket: net.Socket,
    readonly path: string,
  ) {
    const stream = new JsonStream();
    socket.setEncoding('utf8');
    socket.unref(); // kept alive only while a request or a wait is out (see idle)
    socket.on('data', (chunk: string) => {
      try {
        for (const text of stream.push(chunk)) {
          trace('ovs', '<', text);
          this.receive(JSON.parse(text) as Record<string, unknown>);
        }
      } catch (e) {
        socket.destroy(
          new OvsdbError(`the Open vSwitch database at ${path} sent what is not JSON: ${(e as Error).message}`),
        );
      }
    });
    const fail = (e: Error) => {
      this.closedError ??= e;
      for (const p of this.pending.values()) p.reject(this.closedError);
      this.pending.clear();
      for (const w of this.cfgWaiters.splice(0)) w.reject(this.closedError);
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new OvsdbError(`the Open vSwitch database at ${path} closed the connection`)));
  }

  /** Connects, and starts following cur_cfg (one round trip, in the same flight as the first request). */
  static connect(socketPath = ovsdbSocket()): Promise<OvsdbClient> {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection(socketPath);
      socket.once('error', (e: NodeJS.ErrnoException) =>
        reject(
          new OvsdbError(
            e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
              ? noDatabase(socketPath)
              : `cannot reach the Open vSwitch database at ${socketPath}: ${e.message}`,
          ),
        ),
      );
      socket.once('connect', () => {
        const client = new OvsdbClient(socket, socketPath);
        client
          .request('monitor', [OVS_DB, 'cfg', { Open_vSwitch: { columns: ['cur_cfg'] } }])
          .then((initial) => client.takeCfg(initial))
          .catch(() => {}); // a failed monitor shows up as a wait that times out
        resolve(client);
      });
    });
  }

  /** Runs the operations as one atomic transaction; throws on the first operation's error. */
  async transact(ops: OvsdbOp[]): Promise<Record<string, unknown>[]> {
    const results = (await this.request('transact', [OVS_DB, ...ops])) as (Record<string, unknown> | null)[];
    const failed = results.findIndex((r) => r && typeof r.error === 'string');
    if (failed >= 0) {
      const r = results[failed]!;
      const op = ops[failed]?.op ?? 'commit';
      throw new OvsdbError(
        `OVSDB ${op} failed: ${String(r.error)}${r.details ? ` (${String(r.details)})` : ''}`,
        failed,
      );
    }
    return results as Record<string, unknown>[];
  }

  /** Rows of a table, with the columns asked for (and _uuid). */
  async select(table: string, where: unknown[][], columns: string[]): Promise<OvsdbRow[]> {
    const [r] = await this.transact([{ op: 'select', table, where, columns: ['_uuid', ...columns] }]);
    return (r!.rows as OvsdbRow[]) ?? [];
  }

  /** Waits until ovs-vswitchd has applied configuration `target` (its cur_cfg reached it). */
  waitApplied(target: number, timeoutMs = 5000): Promise<void> {
    if (this.curCfg >= target) return Promise.resolve();
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => {
      const waiter = {
        target,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (e: Error) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this.cfgWaiters.splice(this.cfgWaiters.indexOf(waiter), 1);
        this.idle();
        reject(
          new OvsdbError(
            `ovs-vswitchd did not apply the change within ${timeoutMs} ms (configuration ${target}, applied ${this.curCfg}): is ovs-vswitchd running?`,
          ),
        );
      }, timeoutMs);
      this.cfgWaiters.push(waiter);
      this.socket.ref();
    });
  }

  close(): void {
    this.closedError ??= new OvsdbError('the OVSDB connection was closed');
    this.socket.destroy();
  }

  private request(method: string, params: unknown[]): Promise<unknown> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.ref();
      this.send({ method, params, id });
    });
  }

  private send(msg: object): void {
    const text = JSON.stringify(msg);
    trace('ovs', '>', text);
    this.socket.write(text);
  }

  private receive(msg: Record<string, unknown>): void {
    if (msg.method === 'echo') {
      this.send({ result: msg.params, error: null, id: msg.id });
      return;
    }
    if (msg.method === 'update') {
      this.takeCfg((msg.params as unknown[])[1]);
      return;
    }
    const p = typeof msg.id === 'number' ? this.pending.get(msg.id) : undefined;
    if (!p) return;
    this.pending.delete(msg.id as number);
    this.idle();
    if (msg.error) p.reject(new OvsdbError(`OVSDB: ${JSON.stringify(msg.error)}`));
    else p.resolve(msg.result);
  }

  /** cur_cfg from a monitor's table-updates. */
  private takeCfg(updates: unknown): void {
    const rows = (updates as { Open_vSwitch?: Record<string, { new?: { cur_cfg?: number } }> }).Open_vSwitch ?? {};
    for (const row of Object.values(rows)) if (typeof row.new?.cur_cfg === 'number') this.curCfg = row.new.cur_cfg;
    for (const w of [...this.cfgWaiters]) {
      if (this.curCfg < w.target) continue;
      this.cfgWaiters.splice(this.cfgWaiters.indexOf(w), 1);
      w.resolve();
    }
    this.idle();
  }

  /** True once the connection is gone (a new one is needed). */
  get closed(): boolean {
    return this.closedError !== undefined;
  }

  /** An open connection with nothing out does not keep the process alive (a CLI exits when done). */
  private idle(): void {
    if (this.pending.size === 0 && this.cfgWaiters.length === 0) this.socket.unref();
  }
}

/** The operations that ask ovs-vswitchd to apply a transaction: bump next_cfg, read it back. */
export const applyOps = (): OvsdbOp[] => [
  { op: 'mutate', table: 'Open_vSwitch', where: [], mutations: [['next_cfg', '+=', 1]] },
  { op: 'select', table: 'Open_vSwitch', where: [], columns: ['next_cfg'] },
];

/** next_cfg as the last of applyOps read it. */
export function appliedTarget(results: Record<string, unknown>[]): number {
  const rows = results[results.length - 1]!.rows as { next_cfg: number }[];
  return rows[0]!.next_cfg;
}
