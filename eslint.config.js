// Lint rules: typescript-eslint's recommended type-aware set, plus the few rules that keep
// the core honest (no floating promises, no process.exit outside the entry points) and the
// house's rooms of docs/architecture.md (rooms.json: which room may import which, each entered
// through its index.ts; so src/ never reaches out to the entry points, the stand-in, the
// simulators or the tests, and the simulators never borrow the drivers' code).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/**
 * The house's rooms and which rooms each may import (imports point inward): rooms.json, read
 * by this rule and by test/unit/rooms.test.ts; docs/architecture.md draws the same table. A room
 * is a folder of src/ or a top-level folder; another room is entered only through an index.ts
 * (its public face, or a sub-folder's), except the entry rooms, whose every file is an entry.
 */
const { imports: ROOM_IMPORTS, entryRooms: ENTRY_ROOMS } = JSON.parse(
  readFileSync(new URL('./rooms.json', import.meta.url), 'utf8'),
);
const ROOT = import.meta.dirname;
const roomOf = (file) => {
  const parts = path.relative(ROOT, file).split(path.sep);
  if (parts[0] === 'src') return parts.length > 2 ? `src/${parts[1]}` : undefined;
  return parts[0];
};
const roomsRule = {
  meta: {
    type: 'problem',
    schema: [],
    messages: {
      inward: '{{from}} may not import {{to}}: imports point inward (allowed: {{allowed}}).',
      deep: 'Enter {{to}} through its index.ts, not {{spec}}: export what you need there.',
    },
  },
  create(context) {
    const from = roomOf(context.filename);
    const allowed = ROOM_IMPORTS[from];
    if (!allowed) return {};
    const check = (node, source) => {
      const spec = source && typeof source.value === 'string' ? source.value : undefined;
      if (!spec || !spec.startsWith('.')) return;
      const target = path.resolve(path.dirname(context.filename), spec);
      const to = roomOf(target);
      if (!to || to === from) return;
      if (!allowed.includes(to))
        context.report({
          node,
          messageId: 'inward',
          data: { from, to, allowed: allowed.join(', ') || 'none' },
        });
      else if (!ENTRY_ROOMS.includes(to) && path.basename(target) !== 'index.js')
        context.report({ node, messageId: 'deep', data: { to, spec } });
    };
    return {
      ImportDeclaration: (n) => check(n, n.source),
      ExportNamedDeclaration: (n) => check(n, n.source),
      ExportAllDeclaration: (n) => check(n, n.source),
      ImportExpression: (n) => check(n, n.source),
    };
  },
};

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
    plugins: { house: { rules: { rooms: roomsRule } } },
    rules: {
      'house/rooms': 'error',
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
    files: ['test/**'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },
);
