// Bundles the CLI into CommonJS files in dist/ (below), each with a V8 code cache (*.cjs.cache).
// rxjs, commander and execa as published cost about 140 ms of imports per run; ESM chunks still
// cost Node's ESM loader and a compile at every start (Node 20 has no module compile cache).
// CommonJS bundles, run by bin/mq-hotplug.cjs through vm.Script with their caches, start about as
// fast as `node -e 0` (npm run bench measures it). The caches are made here, at build time, by a
// run of the hidden __warm command; they are never written at run time.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { build } from 'esbuild';
import { cliBundle, lazyChildProcess, rxjsEsm } from './esbuild-options.mjs';

// Five files, each a CommonJS bundle, so that a command loads only what it runs:
//   client.cjs      the agent's client (src/agent/client.ts), loaded first: where a host agent
//                   runs, the command goes there and nothing else is loaded;
//   mq-hotplug.cjs  commander and the program (program.ts): --version, --help, usage errors stop here;
//   back.cjs        everything the commands run (back.ts), required on the first action;
//   execa.cjs       execa and what it pulls in, for start, stop and hooks only (it was 40% of one
//                   bundle: every add read, hashed and deserialized it), required where they run
//                   (qemu/launcher.ts's loadExeca): loaded at back.cjs's start, it cost an add ~15 ms;
//   prom-client.cjs the agent's metrics library, for the same reason (it doubled back.cjs), required
//                   when the agent starts.
// No module with classes is in two of them (the error classes must be one, for instanceof): the
// front holds only commander, the program, util/write.ts and util/request.ts (whose client is
// only ever set in back.cjs's copy: the agent runs back.cjs's program); back.js reaches execa
// only through the launcher and watch.
const apart = (filter, file) => ({
  name: `apart-${file}`,
  setup(b) {
    b.onResolve({ filter }, () => ({ path: `./${file}`, external: true }));
  },
});

fs.rmSync('dist', { recursive: true, force: true });
const result = await build({
  ...cliBundle,
  outfile: 'dist/mq-hotplug.cjs',
  plugins: [apart(/^\.\/back\.js$/, 'back.cjs'), lazyChildProcess],
  supported: { 'dynamic-import': false }, // import('./back.js') becomes a require the bin answers
});
for (const [entry, outfile, plugins] of [
  ['src/agent/client.ts', 'dist/client.cjs', []],
  [
    'src/cli/back.ts',
    'dist/back.cjs',
    [rxjsEsm, apart(/^execa$/, 'execa.cjs'), apart(/^prom-client$/, 'prom-client.cjs')],
  ],
  ['execa', 'dist/execa.cjs', []],
  ['prom-client', 'dist/prom-client.cjs', []],
]) {
  const built = await build({
    ...cliBundle,
    ...(entry.startsWith('src/')
      ? { entryPoints: [entry] }
      : { entryPoints: undefined, stdin: { contents: `module.exports = require('${entry}');`, resolveDir: '.' } }),
    outfile,
    plugins,
    // import('execa') becomes a require of execa.cjs that the bin answers, made when it runs
    supported: { 'dynamic-import': false },
  });
  Object.assign(result.metafile.outputs, built.metafile.outputs);
}
// the front may share with back.cjs only these, which have no classes
const front = Object.keys(result.metafile.outputs['dist/mq-hotplug.cjs'].inputs);
const allowed = ['src/cli/main.ts', 'src/cli/program.ts', 'src/version.ts', 'src/util/write.ts', 'src/util/request.ts'];
if (front.some((f) => f.startsWith('src/') && !allowed.includes(f)))
  throw new Error(`bundle: the front bundle may hold only ${allowed.join(', ')} of src/; it holds ${front.join(', ')}`);
// the cache: made by a run of the hidden __warm command, which loads every command's modules
execFileSync(process.execPath, ['bin/mq-hotplug.cjs', '__warm'], {
  env: { ...process.env, MQ_HOTPLUG_MAKE_CODE_CACHE: '1' },
  stdio: 'ignore',
});
for (const f of ['dist/client.cjs.cache', 'dist/mq-hotplug.cjs.cache', 'dist/back.cjs.cache'])
  if (!fs.existsSync(f)) throw new Error(`bundle: no code cache ${f} was made`);

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
