/** The CLI's entry: the program (program.ts) on this process's command line. */
import { runProgram } from './program.js';

void runProgram(process.argv.slice(2)); // no top-level await: the CLI is also bundled as CommonJS
