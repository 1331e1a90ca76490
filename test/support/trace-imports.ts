/**
 * Preloaded with `node --import` (test/cli-startup.test.ts): prints the URL
 * of every module the process imports, one "import: URL" line each on
 * standard error. A package is seen when it is first imported, not the files
 * it then requires.
 */
import { register } from 'node:module';

// Hooks run on a thread of their own: a synchronous write to fd 2 is not lost when the process exits right after.
const hook = `import { writeSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context);
  writeSync(2, 'import: ' + resolved.url + '\\n');
  return resolved;
}`;
register(`data:text/javascript,${encodeURIComponent(hook)}`);
