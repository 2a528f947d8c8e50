/**
 * A fake QMP server on a real unix socket, for unit tests of the QMP layer and for faults a real
 * QEMU cannot be made to produce. It can replay a transcript recorded from QEMU (fixtures/qmp/),
 * putting the client's ids into the recorded answers, with chunk boundaries chosen by the test.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export type Chunking = 'line' | 'byte' | 'all' | ((text: string) => string[]);

export interface TranscriptLine {
  dir: 'in' | 'out';
  line: string;
}

export function loadTranscript(name: string): TranscriptLine[] {
  const file = new URL(`../../../fixtures/qmp/${name}.jsonl`, import.meta.url);
  return fs
    .readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as TranscriptLine);
}

/** One accepted client connection. */
export class FakeConnection {
  private buffered = '';
  private readonly received: Record<string, unknown>[] = [];
  private waiters: (() => void)[] = [];

  constructor(readonly socket: net.Socket) {
    socket.on('error', () => {});
    socket.on('data', (chunk) => {
      this.buffered += chunk.toString('utf8');
      const lines = this.buffered.split('\n');
      this.buffered = lines.pop()!;
      for (const line of lines) if (line.trim()) this.received.push(JSON.parse(line) as Record<string, unknown>);
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on('close', () => {
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** Writes text split as asked; 'byte' writes every byte separately (yielding between them). */
  async send(text: string, chunking: Chunking = 'line'): Promise<void> {
    const pieces =
      chunking === 'line' || chunking === 'all'
        ? [text]
        : chunking === 'byte'
          ? [...Buffer.from(text)].map((b) => Buffer.from([b]))
          : chunking(text);
    for (const piece of pieces) {
      if (this.socket.destroyed) return;
      this.socket.write(piece);
      if (chunking === 'byte' || typeof chunking === 'function') await new Promise((r) => setImmediate(r));
    }
  }

  sendJson(message: object, chunking?: Chunking): Promise<void> {
    return this.send(JSON.stringify(message) + '\r\n', chunking);
  }

  greet(): Promise<void> {
    return this.sendJson({
      QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 }, package: 'fake' }, capabilities: ['oob'] },
    });
  }

  /** The next command the client sent (waits for it). */
  async nextCommand(): Promise<{ execute: string; arguments?: Record<string, unknown>; id: string }> {
    while (this.received.length === 0) {
      if (this.socket.destroyed) throw new Error('client went away');
      await new Promise<void>((r) => this.waiters.push(r));
    }
    return this.received.shift() as { execute: string; id: string };
  }

  /** Greets, answers qmp_capabilities; then the client is ready. */
  async negotiate(): Promise<void> {
    await this.greet();
    const cmd = await this.nextCommand();
    await this.sendJson({ return: {}, id: cmd.id });
  }

  /**
   * Replays a recorded transcript: sends QEMU's lines, and for each recorded command waits for the
   * client's and answers with the recorded answer under the client's id. With 'all', everything
   * QEMU wrote between two commands goes out as one chunk.
   */
  async replay(transcript: TranscriptLine[], chunking: Chunking = 'line'): Promise<void> {
    let pendingOut = '';
    let idMap = new Map<string, string>();
    const flush = async () => {
      if (pendingOut) await this.send(pendingOut, chunking);
      pendingOut = '';
    };
    for (const entry of transcript) {
      if (entry.dir === 'in') {
        await flush();
        const recorded = JSON.parse(entry.line) as { execute: string; id: string };
        const actual = await this.nextCommand();
        if (actual.execute !== recorded.execute)
          throw new Error(`expected ${recorded.execute}, client sent ${actual.execute}`);
        idMap = new Map([[recorded.id, actual.id]]);
      } else {
        const message = JSON.parse(entry.line) as { id?: string };
        if (message.id !== undefined && idMap.has(message.id)) message.id = idMap.get(message.id)!;
        pendingOut += JSON.stringify(message) + '\r\n';
        if (chunking !== 'all') await flush();
      }
    }
    await flush();
  }

  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export class FakeQmpServer {
  readonly connections: FakeConnection[] = [];
  private waiters: ((c: FakeConnection) => void)[] = [];

  private constructor(
    readonly path: string,
    private readonly server: net.Server,
    private readonly dir: string,
  ) {
    server.on('connection', (socket) => {
      const conn = new FakeConnection(socket);
      this.connections.push(conn);
      const waiter = this.waiters.shift();
      if (waiter) waiter(conn);
    });
  }

  static async start(): Promise<FakeQmpServer> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mqt-fake-'));
    const sock = path.join(dir, 'qmp.sock');
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    return new FakeQmpServer(sock, server, dir);
  }

  /** The next connection (or one already accepted and not yet taken). */
  nextConnection(): Promise<FakeConnection> {
    const taken = this.taken++;
    if (this.connections[taken]) return Promise.resolve(this.connections[taken]!);
    return new Promise((resolve) => this.waiters.push(resolve));
  }
  private taken = 0;

  async close(): Promise<void> {
    for (const c of this.connections) c.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A small seeded PRNG (mulberry32), so a failing random test can be replayed from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Splits text into random chunks (by bytes, so UTF-8 characters get cut too). */
export function randomChunks(random: () => number, maxChunk = 40): (text: string) => string[] {
  return (text) => {
    const bytes = Buffer.from(text);
    const chunks: string[] = [];
    for (let i = 0; i < bytes.length;) {
      const n = 1 + Math.floor(random() * maxChunk);
      chunks.push(bytes.subarray(i, i + n) as unknown as string);
      i += n;
    }
    return chunks;
  };
}
