// The LAN host's side of a bounded TCP transfer, run inside the test's network namespace
// (`ip netns exec NS node lan-peer.mjs MODE PORT [BYTES]`). It accepts one connection on [::]:PORT
// and prints {"bytes": N, "ms": T} when that connection ends:
//   recv: counts what the peer sends, T from the first byte to the last;
//   send: sends BYTES, T from the connection to the peer's close (all of it delivered).
// It gives up after 60 s whatever happens, so a test can never leave traffic running.
import net from 'node:net';

const [mode, port, total = '0'] = process.argv.slice(2);
const giveUp = setTimeout(() => {
  console.log(JSON.stringify({ error: 'timeout' }));
  process.exit(2);
}, 60_000);

const server = net.createServer((socket) => {
  server.close();
  const started = performance.now();
  let bytes = 0;
  let first = 0;
  let last = 0;
  const done = (ms) => {
    clearTimeout(giveUp);
    console.log(JSON.stringify({ bytes, ms }));
  };
  socket.on('error', () => {});
  if (mode === 'recv') {
    socket.on('data', (chunk) => {
      last = performance.now();
      if (!bytes) first = last;
      bytes += chunk.length;
    });
    socket.on('close', () => done(last - first));
  } else {
    const block = Buffer.alloc(64 * 1024);
    let left = Number(total);
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, block.length);
        left -= n;
        bytes += n;
        if (!socket.write(block.subarray(0, n))) return socket.once('drain', pump);
      }
      socket.end();
    };
    socket.on('close', () => done(performance.now() - started));
    pump();
  }
});
server.listen({ host: '::', port: Number(port) }, () => console.error('listening'));
