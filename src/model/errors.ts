/**
 * An error caused by what the user asked for (a CLI argument, a config
 * field, an API request): reported as one line, never as a stack trace.
 */
export class InputError extends Error {
  override readonly name = 'InputError';
}
