#!/usr/bin/env node
// The published entry, CommonJS so that Node starts no ESM loader for it. Where the CLI was bundled
// (npm run build), its bundles in dist/ run through vm.Script with the V8 code caches made at build
// time, so Node does not compile them again at every start (a cache from another Node is rejected
// by V8, and the bundle compiles as usual): first the program (commander), then, on the first
// action, what the commands run (back.cjs). Else the compiled, unbundled CLI runs.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const Module = require('node:module');
const vm = require('node:vm');

const dist = path.join(__dirname, '..', 'dist');
const making = process.env.MQ_HOTPLUG_MAKE_CODE_CACHE === '1';

/** Runs one bundle of dist/ as a CommonJS module, with its code cache; `require` resolves from dist/. */
function load(file, require) {
  const filename = path.join(dist, file);
  const cacheFile = `${filename}.cache`;
  const source = fs.readFileSync(filename, 'utf8');
  const cachedData = making || !fs.existsSync(cacheFile) ? undefined : fs.readFileSync(cacheFile);
  const script = new vm.Script(Module.wrap(source), { filename, cachedData });
  const module = { exports: {} };
  script.runInThisContext().call(module.exports, module.exports, require, module, filename, dist);
  // the build makes the cache after a run, when the functions that ran are compiled too
  if (making) process.once('beforeExit', () => fs.writeFileSync(cacheFile, script.createCachedData(), { mode: 0o644 }));
  return module.exports;
}

const bundled = fs.existsSync(path.join(dist, 'mq-hotplug.cjs'));
const requireFromDist = Module.createRequire(path.join(dist, 'mq-hotplug.cjs'));

/** The CLI itself: the program, then what the commands run. */
function runHere() {
  if (bundled) {
    let back;
    load('mq-hotplug.cjs', (id) =>
      id === './back.cjs' ? (back ??= load('back.cjs', requireFromDist)) : requireFromDist(id),
    );
  } else {
    import(path.join(__dirname, '..', 'build', 'src', 'cli', 'main.js'));
  }
}

// First the agent's client (src/agent/client.ts): where a host agent serves the state directory,
// the command runs there and this process relays it; else, or where the agent is gone, it runs here.
const args = process.argv.slice(2);
// without an agent's socket where the state directory is not given, nothing to ask: the client's
// load (~1 ms) is saved on every such call
const stateDir = process.env.MQ_HOTPLUG_STATE_DIR || '/run/mq-hotplug';
const maybeAgent =
  making ||
  fs.existsSync(path.join(stateDir, 'agent.sock')) ||
  args.some((a) => a === '--state-dir' || a.startsWith('--state-dir='));
const client = !maybeAgent
  ? Promise.resolve({ agentFor: () => undefined })
  : bundled
    ? Promise.resolve(load('client.cjs', requireFromDist))
    : import(path.join(__dirname, '..', 'build', 'src', 'agent', 'client.js'));
client.then((c) => {
  const socket = c.agentFor(args, process.env);
  if (!socket) return runHere();
  return c.forward(socket, args, process.env).then((code) => {
    if (code === undefined) runHere();
    else process.exitCode = code;
  });
});
