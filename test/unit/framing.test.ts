import { expect } from 'chai';
import { LineDecoder } from '../../src/qmp/framing.js';
import { QmpProtocolError } from '../../src/qmp/errors.js';
import { loadTranscript, prng } from '../helpers/fake-qmp.js';

describe('LineDecoder (QMP framing)', () => {
  it('splits several messages in one chunk, with CRLF or LF', () => {
    const d = new LineDecoder();
    expect(d.push(Buffer.from('{"a":1}\r\n{"b":2}\n{"c":3}\r\n'))).to.deep.equal(['{"a":1}', '{"b":2}', '{"c":3}']);
  });

  it('keeps a partial line across chunks and emits it once completed', () => {
    const d = new LineDecoder();
    expect(d.push(Buffer.from('{"return": {}, "i'))).to.deep.equal([]);
    expect(d.pending).to.equal('{"return": {}, "i');
    expect(d.push(Buffer.from('d": "x"}\r'))).to.deep.equal([]);
    expect(d.push(Buffer.from('\n'))).to.deep.equal(['{"return": {}, "id": "x"}']);
  });

  it('reassembles a multi-byte UTF-8 character split between chunks', () => {
    const bytes = Buffer.from('{"desc":"é€😀"}\n');
    for (let cut = 1; cut < bytes.length; cut++) {
      const d = new LineDecoder();
      const lines = [...d.push(bytes.subarray(0, cut)), ...d.push(bytes.subarray(cut))];
      expect(lines, `cut at ${cut}`).to.deep.equal(['{"desc":"é€😀"}']);
    }
  });

  it('skips blank lines', () => {
    expect(new LineDecoder().push(Buffer.from('\r\n\n{"a":1}\n\n'))).to.deep.equal(['{"a":1}']);
  });

  it('refuses a line longer than the limit', () => {
    const d = new LineDecoder(1024);
    expect(() => d.push(Buffer.alloc(2048, 'x'))).to.throw(QmpProtocolError, /longer than 1024 bytes/);
  });

  it('property: any split of a recorded transcript yields the same lines', () => {
    const text = loadTranscript('session')
      .filter((l) => l.dir === 'out')
      .map((l) => l.line + '\r\n')
      .join('');
    const bytes = Buffer.from(text);
    const expected = new LineDecoder().push(bytes);
    expect(expected).to.have.length(19);
    const seed = Number(process.env.MQH_SEED ?? Date.now() % 1e9);
    const random = prng(seed);
    for (let round = 0; round < 300; round++) {
      const d = new LineDecoder();
      const got: string[] = [];
      for (let i = 0; i < bytes.length;) {
        const n = 1 + Math.floor(random() * (round % 3 === 0 ? 3 : 200));
        got.push(...d.push(bytes.subarray(i, i + n)));
        i += n;
      }
      expect(got, `seed ${seed}, round ${round}`).to.deep.equal(expected);
    }
  });
});
