/**
 * Output by write(2) (src/util/write.ts): a reader that goes away ends the output quietly, stdout
 * and stderr keep their order on one pipe, and a full non-blocking descriptor hands the rest to
 * the stream (that fault is stubbed: a test cannot make this process's stdout non-blocking).
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import sinon from 'sinon';
import { writeOut } from '../../src/util/write.js';

const writeModule = new URL('../../src/util/write.js', import.meta.url).href;

/** Runs a small ESM program that has writeOut and writeErr in scope. */
function child(program: string, stdio: 'pipe' | 'merged' = 'pipe') {
  const script = `import { writeOut, writeErr } from '${writeModule}';\n${program}`;
  const args = ['--input-type=module', '-e', script];
  return stdio === 'merged'
    ? spawn('sh', ['-c', `"${process.execPath}" "$@" 2>&1`, 'sh', ...args])
    : spawn(process.execPath, args);
}
const exited = (p: ReturnType<typeof spawn>) =>
  new Promise<number | null>((resolve) => p.on('close', (code) => resolve(code)));

describe('output by write(2)', () => {
  afterEach(() => sinon.restore());

  it('a reader that goes away (EPIPE) ends the output quietly, exit 0', async () => {
    const p = child(`for (let i = 0; i < 64; i++) writeOut('x'.repeat(65536));\nwriteErr('done\\n');`);
    let stderr = '';
    p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    await new Promise<void>((resolve) => p.stdout!.once('data', () => resolve()));
    p.stdout!.destroy(); // like `| head -c 10`
    expect(await exited(p)).to.equal(0);
    expect(stderr).to.equal('done\n');
  });

  it('stdout and stderr on one pipe keep the order they were written in', async () => {
    const p = child(`for (let i = 0; i < 50; i++) { writeOut(i + ' out\\n'); writeErr(i + ' err\\n'); }`, 'merged');
    let text = '';
    p.stdout!.on('data', (d: Buffer) => (text += d.toString()));
    expect(await exited(p)).to.equal(0);
    const expected = Array.from({ length: 50 }, (_, i) => `${i} out\n${i} err\n`).join('');
    expect(text).to.equal(expected);
  });

  it('a full non-blocking descriptor (EAGAIN) gets the rest through the stream, nothing lost or doubled', () => {
    const written: Buffer[] = [];
    sinon
      .stub(fs, 'writeSync')
      .onFirstCall()
      .callsFake(((_fd: number, buffer: Buffer) => {
        written.push(Buffer.from(buffer.subarray(0, 4)));
        return 4;
      }) as unknown as typeof fs.writeSync)
      .onSecondCall()
      .throws(Object.assign(new Error('EAGAIN'), { code: 'EAGAIN' }));
    const stream = sinon.stub(process.stdout, 'write').returns(true);
    writeOut('0123456789');
    sinon.restore(); // before mocha writes its report
    expect(Buffer.concat(written).toString()).to.equal('0123');
    expect(stream.calledOnce).to.equal(true);
    expect(Buffer.from(stream.firstCall.args[0] as Uint8Array).toString()).to.equal('456789');
  });
});
