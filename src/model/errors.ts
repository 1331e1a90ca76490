/**
 * An error caused by what the user asked for (a CLI argument, a config
 * field, an API request): reported as one line, never as a stack trace.
 */
export class InputError extends Error {
  override readonly name = 'InputError';
}

const MAX_QUOTED = 64;

/**
 * A value the user gave, quoted for an error message: control characters
 * escaped, and cut short when long, so an error never echoes a whole file
 * or a 100 KB argument back.
 */
export function quote(value: unknown): string {
  let text: string;
  try {
    text = String(value);
  } catch {
    text = Object.prototype.toString.call(value); // an object whose toString is not a function
  }
  if (text.length <= MAX_QUOTED) return JSON.stringify(text);
  return `${JSON.stringify(text.slice(0, MAX_QUOTED - 16)).slice(0, -1)}…" (${text.length} characters)`;
}
