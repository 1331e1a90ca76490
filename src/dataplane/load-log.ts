/**
 * Shortens libbpf's output after a failed load to what explains it: the
 * libbpf error lines and the end of the verifier log, where the rejected
 * instruction and the reason are.
 */
const VERIFIER_TAIL_LINES = 12;

export function summarizeLoadLog(log: string): string {
  const lines = log
    .split('\n')
    .map((line) => line.trimEnd())
    .filter((line) => line !== '');
  const begin = lines.findIndex((line) => line.includes('-- BEGIN PROG LOAD LOG --'));
  const end = lines.findIndex((line) => line.includes('-- END PROG LOAD LOG --'));
  if (begin < 0 || end < begin) return lines.slice(-VERIFIER_TAIL_LINES).join('\n');
  const verifier = lines.slice(begin + 1, end).filter((line) => !/^(processed|verification time|stack depth)/.test(line));
  const context = lines.slice(0, begin).filter((line) => /failed|error|invalid/i.test(line));
  return [...context, ...verifier.slice(-VERIFIER_TAIL_LINES)].join('\n');
}
