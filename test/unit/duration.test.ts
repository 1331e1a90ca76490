/** Durations: a unit is always needed, compound forms add up, nothing is guessed. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseConfig } from '../../src/model/config.js';
import { formatDuration, parseDuration, parseKillSwitchTimeout } from '../../src/model/duration.js';
import { InputError } from '../../src/model/errors.js';

test('a number with a unit, or several in decreasing order, in milliseconds', () => {
  const cases: Array<[string, number]> = [
    ['500ms', 500],
    ['2s', 2000],
    ['1.5m', 90_000],
    ['1h', 3_600_000],
    ['1d', 86_400_000],
    ['1h30m', 5_400_000],
    ['1m30s', 90_000],
    ['2s500ms', 2500],
    ['1d2h3m4s5ms', 86_400_000 + 7_200_000 + 180_000 + 4000 + 5],
    [' 3s ', 3000],
  ];
  for (const [text, ms] of cases) assert.equal(parseDuration(text), ms, text);
});

test('a bare number is refused: 2000 could mean seconds or (HAProxy) milliseconds', () => {
  assert.throws(
    () => parseDuration('2000', 'check interval'),
    (e: unknown) =>
      e instanceof InputError &&
      e.message === 'invalid check interval "2000": give a unit, e.g. 2000s or 2000ms (a bare number is ambiguous)',
  );
  assert.throws(() => parseDuration('1.5'), /give a unit/);
  assert.throws(() => parseDuration('0'), /must be more than zero/, '0 needs no unit, but nothing here may be zero');
  assert.throws(() => parseDuration('0s'), /must be more than zero/);
});

test('malformed durations are refused with an example', () => {
  for (const text of ['', 'soon', '2 s', '2sec', '30m1h', '1s1s', '-1s', '1h-30m', '5x', 's', '1e3s', '2s ms']) {
    assert.throws(
      () => parseDuration(text, 'timeout'),
      /invalid timeout .*expected a number with a unit \(ms, s, m, h, d\), e\.g\. 500ms/,
      JSON.stringify(text),
    );
  }
});

test('formatDuration and the kill-switch range', () => {
  assert.deepEqual(
    [formatDuration(500), formatDuration(2000), formatDuration(90_000), formatDuration(7_200_000)],
    ['500ms', '2s', '90s', '2h'],
  );
  assert.equal(parseKillSwitchTimeout('1m30s'), 90_000);
  assert.throws(() => parseKillSwitchTimeout('500ms'), /must be from 1s to 1h/);
  assert.throws(() => parseKillSwitchTimeout('30'), /give a unit/);
});

test('in the config file too: a YAML number is a bare number', () => {
  const config = (interval: string) => `vips:\n  - vip: 10.0.0.1:80/tcp\n    check_interval: ${interval}\n`;
  assert.equal(parseConfig(config('1m30s'), 'c.yaml').state.vips[0]!.check.intervalMs, 90_000);
  assert.throws(
    () => parseConfig(config('2000'), 'c.yaml'),
    /c\.yaml:3:21: vips\[0\]\.check_interval: invalid check interval "2000": give a unit/,
  );
  assert.throws(
    () => parseConfig(`kill_switch_timeout: 30\n`, 'c.yaml'),
    /c\.yaml:1:22: kill_switch_timeout: invalid kill-switch timeout "30": give a unit/,
  );
});
