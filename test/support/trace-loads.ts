/**
 * Preloaded with `node --import` (test/unit/cli-startup.test.ts): prints
 * every module file the process loads on standard error, "import: URL" for
 * an ES module as it is resolved and "require: PATH" for each CommonJS file
 * still in require's cache when the process exits. A package imported as an
 * ES module is seen when it is first imported, not the files it then requires.
 */
import { writeSync } from 'node:fs';
import { createRequire, register } from 'node:module';

// Hooks run on a thread of their own: a synchronous write to fd 2 is not lost when the process exits right after.
const hook = `import { writeSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context);
  writeSync(2, 'import: ' + resolved.url + '\\n');
  return resolved;
}`;
register(`data:text/javascript,${encodeURIComponent(hook)}`);

const required = createRequire(import.meta.url).cache;
process.on('exit', () => {
  for (const file of Object.keys(required)) writeSync(2, `require: ${file}\n`);
});
