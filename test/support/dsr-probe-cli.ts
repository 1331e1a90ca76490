/**
 * Runs one DSR-path probe (src/health/dsr-probe.ts) and prints its result
 * as JSON: the probe sends from the network namespace it runs in, so tests
 * start this inside a lab namespace:
 *
 *   nsenter --net=/run/netns/PREFIX-lb node dist/test/support/dsr-probe-cli.js '{"vip": {...}, "port": 80, ...}'
 */
import { dsrProbe, type DsrProbeTarget } from '../../src/health/dsr-probe.js';

const arg = process.argv[2];
if (arg === undefined) {
  process.stderr.write('usage: dsr-probe-cli.js TARGET_JSON\n');
  process.exit(2);
}
const target = JSON.parse(arg) as DsrProbeTarget;
const started = Date.now();
const result = await dsrProbe(target);
process.stdout.write(`${JSON.stringify({ ...result, ms: Date.now() - started })}\n`);
