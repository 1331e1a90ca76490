#!/usr/bin/env node
// Bundles the command line into one CommonJS file, dist/cli/lbctl.cjs, from
// what tsc built in dist/src. Every call of lbctl is a new process: Node
// reads and links one file much faster than the ES module graph of
// src/cli/main.ts and commander (measured: `lbctl --version` 74-97 ms median
// as modules, 62 ms bundled, against 33-42 ms for `node -e 0`).
//
// What a command loads only when it runs (the daemon, the data plane, the
// config file's YAML, `top`) stays outside, as the ES modules in dist/src:
// the bundle imports them by a path relative to itself. The socket client
// and the output formatting, which every daemon command needs, are inside.
// dist/cli/lbctl.meta.json lists the bundle's inputs (test/unit/cli-startup).
import { build } from 'esbuild';
import { writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const entry = join(root, 'dist', 'src', 'cli', 'main.js');
// Two levels below the root, as dist/src/paths.js is: its PROJECT_ROOT holds in the bundle too.
const outfile = join(root, 'dist', 'cli', 'lbctl.cjs');
const LAZY_INSIDE = new Set(['api/client.js', 'cli/format.js'].map((f) => join(root, 'dist', 'src', f)));

const keepLazyModulesOutside = {
  name: 'lazy-modules-outside',
  setup(b) {
    b.onResolve({ filter: /.*/ }, (args) => {
      if (args.kind !== 'dynamic-import' || !args.path.startsWith('.')) return undefined;
      const target = resolve(args.resolveDir, args.path);
      if (LAZY_INSIDE.has(target)) return undefined;
      const fromBundle = relative(dirname(outfile), target);
      return { path: fromBundle.startsWith('.') ? fromBundle : `./${fromBundle}`, external: true };
    });
  },
};

const result = await build({
  entryPoints: [entry],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node18',
  // The modules' own URL (paths.ts finds the tree by it; main.ts forks itself) is the bundle's.
  define: { 'import.meta.url': '__bundle_url' },
  banner: { js: "'use strict';\nconst __bundle_url = require('node:url').pathToFileURL(__filename).href;" },
  plugins: [keepLazyModulesOutside],
  metafile: true,
  logLevel: 'warning',
});
writeFileSync(join(dirname(outfile), 'lbctl.meta.json'), `${JSON.stringify(result.metafile, null, 2)}\n`);
