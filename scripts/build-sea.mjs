// `npm run build:sea`: mq-hotplug as one executable file, build/sea/mq-hotplug, for hosts without
// Node 20 (Debian 12's own nodejs is 18). It is this Node's binary with the CLI injected as a
// single executable application (Node's SEA): one CommonJS bundle (execa inside, since a SEA's
// require() loads only Node's built-ins) and the V8 code cache Node makes for it (useCodeCache).
// postject injects the blob, as Node 20's documentation does it (Node 25 has --build-sea instead).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { build } from 'esbuild';
import postject from 'postject';
import { cliBundle, lazyChildProcess, rxjsEsm } from './esbuild-options.mjs';

const out = path.resolve('build/sea');
fs.rmSync(out, { recursive: true, force: true });
fs.mkdirSync(out, { recursive: true });
await build({ ...cliBundle, outfile: path.join(out, 'main.cjs'), plugins: [rxjsEsm, lazyChildProcess] });
const config = path.join(out, 'sea-config.json');
const blob = path.join(out, 'sea-prep.blob');
fs.writeFileSync(
  config,
  JSON.stringify({
    main: path.join(out, 'main.cjs'),
    output: blob,
    disableExperimentalSEAWarning: true,
    useCodeCache: true,
  }),
);
execFileSync(process.execPath, ['--experimental-sea-config', config], { stdio: ['ignore', 'ignore', 'inherit'] });
const executable = path.join(out, 'mq-hotplug');
fs.copyFileSync(process.execPath, executable);
fs.chmodSync(executable, 0o755);
await postject.inject(executable, 'NODE_SEA_BLOB', fs.readFileSync(blob), {
  sentinelFuse: 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2',
});
for (const f of [config, blob, path.join(out, 'main.cjs')]) fs.rmSync(f);
const version = execFileSync(executable, ['--version'], { encoding: 'utf8' }).trim();
console.log(`built ${path.relative('.', executable)} (mq-hotplug ${version}, Node ${process.version})`);
