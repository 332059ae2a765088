// Lint rules: typescript-eslint's recommended type-aware set, plus the few rules that keep
// the core honest (no floating promises, no process.exit outside the entry points) and the
// import rules of docs/architecture.md (src/ never reaches out to the entry points, the
// stand-in, the simulators or the tests; the simulators never borrow the drivers' code).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: ['dist/**', 'node_modules/**', '.provline/**', 'coverage/**', 'bench/**/*.c', '**/*.js'],
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/restrict-template-expressions': [
        'error',
        { allowNumber: true, allowBoolean: true },
      ],
      'no-restricted-properties': [
        'error',
        {
          object: 'process',
          property: 'exit',
          message: 'Throw a ProvlineError; only the entry points in workers/ exit.',
        },
      ],
    },
  },
  {
    files: ['workers/**', 'bench/**'],
    rules: { 'no-restricted-properties': 'off' },
  },
  {
    files: ['src/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^(\\.\\./)+(devices|emulator|workers|test|bench)(/|$)',
              message:
                'src/ imports nothing from devices/, emulator/, workers/, test/ or bench/: an entry point in workers/ hands the CLI what it needs (src/cli/entries.ts).',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['devices/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^(\\.\\./)+src/flash(/|$)',
              message:
                "devices/ implements its protocols from docs/device-protocol.md on its own, so the drivers in src/flash and the simulators check each other; don't borrow the drivers' code.",
            },
          ],
        },
      ],
    },
  },
  {
    files: ['test/**'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },
);
