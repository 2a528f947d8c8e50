// What the CLI's bundle (bundle.mjs) and its single executable (build-sea.mjs) are built with.
import path from 'node:path';

// rxjs's "node" export is its CommonJS build, which cannot be tree-shaken (146 KB in the bundle);
// its ESM build can.
export const rxjsEsm = {
  name: 'rxjs-esm',
  setup(b) {
    b.onResolve({ filter: /^rxjs$/ }, () => ({ path: path.resolve('node_modules/rxjs/dist/esm/index.js') }));
  },
};

// commander requires child_process at its top for executable subcommands, which mq-hotplug does
// not use; with it come net and streams, ~4 ms of every start. It gets a stand-in that loads
// child_process on first use.
export const lazyChildProcess = {
  name: 'lazy-child-process',
  setup(b) {
    b.onResolve({ filter: /^node:child_process$/, namespace: 'file' }, (args) =>
      args.importer.includes('node_modules/commander/') ? { path: 'child_process', namespace: 'lazy' } : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'lazy' }, () => ({
      contents: "module.exports = { spawn: (...a) => require('node:child_process').spawn(...a) };",
      loader: 'js',
    }));
  },
};

/** One CommonJS file for Node 20, from the CLI's entry. */
export const cliBundle = {
  entryPoints: ['src/cli/main.ts'],
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  minify: process.env.BUNDLE_MINIFY !== '0', // 0: readable names, for profiling
  legalComments: 'none',
  metafile: true,
  logLevel: 'warning',
};
