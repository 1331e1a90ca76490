/** Plain-text tables for terminals: columns padded, numbers right-aligned. */
export function table(headers: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const numeric = headers.map((_, i) => rows.length > 0 && rows.every((r) => /^\d+(\.\d+)?[%kMGTP]?$/.test(r[i] ?? '') || r[i] === '-'));
  const line = (cells: readonly string[]) => cells
    .map((cell, i) => (numeric[i] ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
    .join('  ')
    .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

export function percent(fraction: number): string {
  return `${(fraction * 100).toFixed(1)}%`;
}

/** 1234567 -> "1.2M": counters stay readable at any size. */
export function compact(value: string | bigint | number): string {
  const n = Number(value);
  if (n < 1000) return String(value);
  const units = ['k', 'M', 'G', 'T', 'P'];
  let scaled = n;
  let unit = -1;
  while (scaled >= 1000 && unit < units.length - 1) {
    scaled /= 1000;
    unit++;
  }
  return `${scaled.toFixed(scaled < 10 ? 1 : 0)}${units[unit]}`;
}
