// Lint rules for the TypeScript of src/, test/ and bench/ (formatting is prettier's job).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

export default tseslint.config({ ignores: ['dist/', 'build/', 'node_modules/'] }, js.configs.recommended, ...tseslint.configs.recommended, {
  files: ['**/*.ts'],
  languageOptions: { globals: globals.node },
  rules: {
    '@typescript-eslint/no-unused-vars': [
      'error',
      { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' },
    ],
    '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
    eqeqeq: ['error', 'always'],
    // Parsers of network and operator input match control characters on purpose.
    'no-control-regex': 'off',
    'no-constant-condition': ['error', { checkLoops: false }],
  },
});
