#!/usr/bin/env node
// The published entry, CommonJS so that Node starts no ESM loader for it. Where the CLI was bundled
// (npm run build), the one CommonJS bundle runs through vm.Script with the V8 code cache made at
// build time, so Node does not compile it again at every start (a cache from another Node is
// rejected by V8, and the bundle compiles as usual). Else the compiled, unbundled CLI runs.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const Module = require('node:module');
const vm = require('node:vm');

const bundle = path.join(__dirname, '..', 'dist', 'mq-hotplug.cjs');
if (fs.existsSync(bundle)) {
  const cacheFile = `${bundle}.cache`;
  const making = process.env.MQ_HOTPLUG_MAKE_CODE_CACHE === '1';
  const source = fs.readFileSync(bundle, 'utf8').replace(/^#!.*/, ''); // the hashbang is no JavaScript
  const cachedData = making || !fs.existsSync(cacheFile) ? undefined : fs.readFileSync(cacheFile);
  const script = new vm.Script(Module.wrap(source), { filename: bundle, cachedData });
  const module = { exports: {} };
  script
    .runInThisContext()
    .call(module.exports, module.exports, Module.createRequire(bundle), module, bundle, path.dirname(bundle));
  // the build makes the cache after a run, when the functions that ran are compiled too
  if (making) process.once('beforeExit', () => fs.writeFileSync(cacheFile, script.createCachedData(), { mode: 0o644 }));
} else {
  import(path.join(__dirname, '..', 'build', 'src', 'cli', 'main.js'));
}
