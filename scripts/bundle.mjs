// Bundles the CLI into one ESM file (dist/mq-hotplug.mjs): rxjs, commander and execa as published
// cost about 140 ms of imports per run; tree-shaken into one minified file they cost a fraction.
import path from 'node:path';
import { build } from 'esbuild';

// rxjs's "node" export is its CommonJS build, which cannot be tree-shaken (146 KB in the bundle);
// its ESM build can.
const rxjsEsm = {
  name: 'rxjs-esm',
  setup(b) {
    b.onResolve({ filter: /^rxjs$/ }, () => ({ path: path.resolve('node_modules/rxjs/dist/esm/index.js') }));
  },
};

const result = await build({
  // split: `--version` and `--help` load commander alone; each command loads its own chunks
  entryPoints: { 'mq-hotplug': 'src/cli/main.ts' },
  outdir: 'dist',
  outExtension: { '.js': '.mjs' },
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  minify: true,
  legalComments: 'none',
  plugins: [rxjsEsm],
  metafile: true,
  // bundled CommonJS dependencies call require() for node built-ins
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  logLevel: 'warning',
});
if (process.env.BUNDLE_REPORT) {
  for (const [out, o] of Object.entries(result.metafile.outputs))
    if (!out.endsWith('.map')) console.log(String(o.bytes).padStart(8), out);
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
