/**
 * Writing to stdout and stderr with plain write(2) calls. Not process.stdout and process.stderr:
 * their first touch builds a stream over the descriptor, about 6 ms of a CLI start on a pipe here
 * (a `--version` costs little else). On Linux those streams write synchronously too, so output
 * keeps its order when both are used. A non-blocking descriptor that is full (EAGAIN) gets the
 * rest through the stream; a reader that went away (EPIPE, `| head`) ends the output quietly.
 */
import fs from 'node:fs';
import { requester } from './request.js';

/** In the agent, a command's output goes to its client instead (util/request.ts). */
export function writeOut(text: string, fd: 1 | 2 = 1): void {
  const client = requester();
  if (client) return fd === 1 ? client.out(text) : client.err(text);
  let rest = Buffer.from(text);
  try {
    while (rest.length) rest = rest.subarray(fs.writeSync(fd, rest));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EAGAIN') (fd === 1 ? process.stdout : process.stderr).write(rest);
    else if (code !== 'EPIPE') throw e;
  }
}

export const writeErr = (text: string) => writeOut(text, 2);
