#!/usr/bin/env node
// The published entry: the bundled CLI where it was built (fast start), else the compiled one.
import { existsSync } from 'node:fs';
const bundle = new URL('../dist/mq-hotplug.mjs', import.meta.url);
await import(existsSync(bundle) ? bundle.href : new URL('../build/src/cli/main.js', import.meta.url).href);
