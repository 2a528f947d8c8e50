/**
 * QMP framing: QEMU writes one JSON object per line ("\r\n" or "\n"). A socket chunk may end
 * mid-line or mid-UTF-8-character and may hold many lines; `LineDecoder` turns chunks into whole
 * lines and nothing else.
 *
 *   const lines = new LineDecoder();
 *   lines.push(Buffer.from('{"a":1}\r\n{"b"'));  // ['{"a":1}']
 *   lines.push(Buffer.from(':2}\n'));            // ['{"b":2}']
 */
import { StringDecoder } from 'node:string_decoder';
import { QmpProtocolError } from './errors.js';

/** Larger than any sane QMP answer (query-qmp-schema is about 200 KiB), small enough to stop a flood. */
export const DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024;

export class LineDecoder {
  private readonly utf8 = new StringDecoder('utf8');
  private partial = '';

  constructor(private readonly maxLineBytes = DEFAULT_MAX_LINE_BYTES) {}

  /** Whole lines completed by this chunk, without their terminators; blank lines are skipped. */
  push(chunk: Buffer): string[] {
    const text = this.partial + this.utf8.write(chunk);
    const parts = text.split('\n');
    this.partial = parts.pop() ?? '';
    if (this.partial.length > this.maxLineBytes) {
      throw new QmpProtocolError(`QMP line longer than ${this.maxLineBytes} bytes without a newline`);
    }
    const lines: string[] = [];
    for (const part of parts) {
      const line = part.endsWith('\r') ? part.slice(0, -1) : part;
      if (line.trim() !== '') lines.push(line);
    }
    return lines;
  }

  /** Bytes received after the last newline (a message cut off by EOF). */
  get pending(): string {
    return this.partial;
  }
}
