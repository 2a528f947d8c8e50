// Lint: typescript-eslint's recommended rules, plus the ones that keep the layers honest.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Import patterns for the given layers' folders, from any depth (src/hotplug/add/ too). */
const above = (...layers) => layers.flatMap((l) => [`../${l}/**`, `../../${l}/**`]);

export default tseslint.config(
  { ignores: ['build/', 'dist/', 'node_modules/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', caughtErrors: 'none' }],
      'no-empty': ['error', { allowEmptyCatch: true }],
      // a layer imports only from below: qmp knows nothing above it, hotplug nothing of the CLI;
      // the CLI reaches the agent (which runs the CLI's program) only through back.ts's lazy door
      'no-restricted-imports': 'off',
    },
  },
  {
    files: ['src/model/**'],
    rules: {
      'no-restricted-imports': ['error', { patterns: above('qmp', 'qemu', 'host', 'hotplug', 'cli', 'agent') }],
    },
  },
  {
    files: ['src/qmp/**'],
    rules: { 'no-restricted-imports': ['error', { patterns: above('qemu', 'host', 'hotplug', 'cli', 'agent') }] },
  },
  {
    files: ['src/qemu/**', 'src/host/**'],
    rules: { 'no-restricted-imports': ['error', { patterns: above('hotplug', 'cli', 'agent') }] },
  },
  {
    files: ['src/hotplug/**'],
    rules: { 'no-restricted-imports': ['error', { patterns: above('cli', 'agent') }] },
  },
  {
    files: ['src/cli/**'],
    ignores: ['src/cli/back.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: above('agent') }] },
  },
  {
    files: ['**/*.cjs'],
    languageOptions: {
      sourceType: 'commonjs',
      globals: {
        require: 'readonly',
        module: 'writable',
        console: 'readonly',
        process: 'readonly',
        __dirname: 'readonly',
      },
    },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    files: ['**/*.mjs', 'eslint.config.js'],
    languageOptions: {
      globals: {
        process: 'readonly',
        console: 'readonly',
        URL: 'readonly',
        Buffer: 'readonly',
        performance: 'readonly',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
      },
    },
  },
);
