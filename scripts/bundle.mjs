// Bundles the CLI into one CommonJS file, dist/mq-hotplug.cjs (execa apart, in dist/execa.cjs), and
// a V8 code cache for it, dist/mq-hotplug.cjs.cache. rxjs, commander and execa as published cost about 140 ms of imports
// per run; ESM chunks still cost Node's ESM loader and a compile at every start (Node 20 has no
// module compile cache). One CJS file, loaded by bin/mq-hotplug.cjs through vm.Script with the
// cache, starts about as fast as `node -e 0` (npm run bench measures it). The cache is made here,
// at build time, by a run of the hidden __warm command; it is never written at run time.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { build } from 'esbuild';
import { cliBundle, rxjsEsm } from './esbuild-options.mjs';

// execa (and what it pulls in) was 40% of the bundle, and only start, stop and hooks use it: it goes
// to its own file, dist/execa.cjs, required when the launcher first runs, so every start of the
// CLI reads, hashes and deserializes less (`--version` 7 ms sooner). It shares no state or classes
// with the rest of mq-hotplug.
const execaApart = {
  name: 'execa-apart',
  setup(b) {
    b.onResolve({ filter: /^execa$/ }, () => ({ path: './execa.cjs', external: true }));
  },
};

fs.rmSync('dist', { recursive: true, force: true });
const result = await build({ ...cliBundle, outfile: 'dist/mq-hotplug.cjs', plugins: [rxjsEsm, execaApart] });
const execaBuild = await build({
  ...cliBundle,
  entryPoints: undefined,
  stdin: { contents: "module.exports = require('execa');", resolveDir: '.' },
  outfile: 'dist/execa.cjs',
});
Object.assign(result.metafile.outputs, execaBuild.metafile.outputs);
// the cache: made by a run of the hidden __warm command, which loads every command's modules
execFileSync(process.execPath, ['bin/mq-hotplug.cjs', '__warm'], {
  env: { ...process.env, MQ_HOTPLUG_MAKE_CODE_CACHE: '1' },
  stdio: 'ignore',
});
if (!fs.existsSync('dist/mq-hotplug.cjs.cache')) throw new Error('bundle: no code cache was made');

if (process.env.BUNDLE_REPORT) {
  for (const [out, o] of Object.entries(result.metafile.outputs)) console.log(String(o.bytes).padStart(8), out);
  const byPackage = {};
  for (const [file, info] of Object.values(result.metafile.outputs).flatMap((o) => Object.entries(o.inputs))) {
    const key = file.startsWith('node_modules')
      ? file
          .split('/')
          .slice(0, file.startsWith('node_modules/@') ? 3 : 2)
          .join('/')
      : 'src';
    byPackage[key] = (byPackage[key] ?? 0) + info.bytesInOutput;
  }
  for (const [k, v] of Object.entries(byPackage)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 8))
    console.log(String(v).padStart(8), k);
}
