/**
 * The benchmarks still work: every part of `make bench` runs with tiny
 * counts (seconds, not minutes) and its results have the expected shape.
 * The figures themselves mean nothing here. wrk, haproxy, nginx's stream
 * module, iptables and nft come with the test tools (scripts/install-deps.sh).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { costTable, floodTable, measureDataplaneCost, measureSynFlood } from '../../bench/dataplane-cost.js';
import { RATE_SYSTEMS, measurePacketRate, rateTable } from '../../bench/packet-rate.js';
import { HTTP_SYSTEMS, HTTP_VARIANTS, httpSvg, httpTable, measureHttp } from '../../bench/http.js';
import { CLI_COMMANDS, MAGLEV_CASES, controlTable, measureControlPlane } from '../../bench/control-plane.js';
import { fleetTable, measureFleet } from '../../bench/fleet.js';
import { type BenchResults, renderReport } from '../../bench/report.js';
import { README_START, README_END, readmeSection, replaceSection } from '../../bench/readme.js';

const positive = (n: number, what: string) => assert.ok(Number.isFinite(n) && n > 0, `${what}: expected a number > 0, got ${n}`);

describe('benchmarks (quick smoke run)', () => {
  const results: BenchResults = {};

  test('1. data-plane cost per packet (IPv4, IPv6, across families)', () => {
    // measureDataplaneCost also checks the first packet of every scenario
    // (action, backend MAC, outer header): a scenario on the wrong path throws.
    const rows = measureDataplaneCost({ iterations: 2000, rounds: 1, manyFlows: 20_000 });
    const flood = measureSynFlood({ established: 1000, flood: 50_000 });
    results.cost = { rows, iterations: 2000, rounds: 1, flood };
    const names = rows.map((r) => r.scenario);
    const expected = [
      'bare XDP_PASS',
      'IPv4 floor: parse, swap MACs, XDP_TX',
      'IPv6 floor: parse, swap MACs, XDP_TX',
      ...['IPv4', 'IPv6'].flatMap((f) => [
        `${f} balancer: not a VIP`,
        ...['l2dsr', 'ipip'].flatMap((m) => [`${f} balancer ${m}: new flow (SYN, 64k tuples)`, `${f} balancer ${m}: established flow`]),
        `${f} balancer ipip: new flow (SYN, 20,000 tuples)`,
        `${f} balancer ipip: first packet after the SYN (an ACK of an untracked flow: tracks it)`,
        `${f} balancer ipip: established flow, 20,000 flows tracked`,
      ]),
      ...['IPv4 balancer ipip, IPv6 backends (4in6)', 'IPv6 balancer ipip, IPv4 backends (6in4)'].flatMap((t) => [
        `${t}: new flow (SYN, 64k tuples)`,
        `${t}: established flow`,
      ]),
    ];
    assert.deepEqual(names, expected);
    for (const r of rows) {
      positive(r.ns, `${r.scenario} ns`);
      positive(r.vsFloor, `${r.scenario} × floor`);
      assert.equal(
        r.family,
        r.scenario.startsWith('IPv6 balancer') ? 6 : r.scenario.startsWith('IPv4 balancer') ? 4 : null,
        `${r.scenario} family`,
      );
      if (r.family === 6)
        assert.equal(
          r.vsFloor,
          r.ns / rows.find((x) => x.scenario === 'IPv6 floor: parse, swap MACs, XDP_TX')!.ns,
          `${r.scenario}: × the IPv6 floor`,
        );
    }
    assert.equal(flood.established, 1000);
    for (const o of [flood.syns, flood.acks])
      assert.ok(o.survivors >= 0 && o.survivors <= 1000 && o.entries >= o.survivors, JSON.stringify(flood));
    assert.match(floodTable(flood), /\| 50,000 SYNs \| [\d,]+ of 1,000 \([\d.]+ %\) \| [\d,]+ \|/);
    const table = costTable(rows);
    assert.match(
      table,
      /\| IPv6 balancer l2dsr: established flow \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \|/,
      'IPv6 rows carry their ratio to IPv4',
    );
  });

  test('2. packet rate in the lab', async () => {
    const rate = await measurePacketRate({ rounds: 1, windowMs: 300, warmupMs: 200 });
    results.rate = rate;
    assert.deepEqual(
      rate.rows.map((r) => r.system),
      [...RATE_SYSTEMS],
    );
    for (const r of rate.rows) {
      positive(r.backendsMpps, `${r.system} Mpps at the backends`);
      positive(r.offeredMpps, `${r.system} offered Mpps`);
      if (r.system !== 'direct') positive(r.balancerMpps, `${r.system} Mpps leaving the balancer`);
    }
    assert.match(rateTable(rate), /\| lbctl-l2dsr:/);
  });

  test('3. HTTP through lbctl and the alternatives', async () => {
    const http = await measureHttp({ rounds: 1, seconds: 1 });
    results.http = http;
    for (const variant of HTTP_VARIANTS) {
      for (const system of HTTP_SYSTEMS) {
        const row = http.rows.find((r) => r.system === system && r.variant === variant);
        assert.ok(row, `${system} ${variant} present`);
        positive(row.requestsPerSecond, `${system} ${variant} requests/s`);
        positive(row.p50Ms, `${system} ${variant} p50`);
        positive(row.p99Ms, `${system} ${variant} p99`);
        positive(row.hostCpuUsPerRequest, `${system} ${variant} host CPU per request`);
      }
    }
    assert.match(httpTable(http), /\| haproxy-tcp:/);
    const svg = httpSvg(http, 'smoke');
    assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.equal(
      (svg.match(/<rect [^>]*><title>/g) ?? []).length,
      HTTP_SYSTEMS.length * HTTP_VARIANTS.length,
      'one bar per system and variant',
    );
  });

  test('4. control plane', async () => {
    const control = await measureControlPlane({ trials: 1, vips: 5, maglevBuilds: 3, cliRuns: 2 });
    results.control = control;
    positive(control.cli.commandMs, 'lbctl backend add duration');
    positive(control.api.commandMs, 'API backend.add duration');
    assert.ok(Number.isFinite(control.cli.afterReturnMs) && Number.isFinite(control.api.afterReturnMs), 'first-packet delays measured');
    positive(control.api.afterStartMs, 'first packet after the API request was sent');
    positive(control.loadMs ?? NaN, 'config load time (lbctl start returned)');
    positive(control.writtenMs ?? NaN, 'config load time (maps written, from the log)');
    positive(control.rssMiB, 'daemon RSS');
    positive(control.idleRssMiB, 'idle daemon RSS');
    assert.equal(control.vips, 5);
    assert.deepEqual(
      control.maglev.map((m) => [m.backends, m.tableSize, m.builds]),
      MAGLEV_CASES.map((n) => [n, 65537, 3]),
    );
    for (const m of control.maglev) positive(m.medianMs, `Maglev build N = ${m.backends}`);
    assert.equal(control.cliCalls.runs, 2);
    assert.deepEqual(
      control.cliCalls.rows.map((r) => r.command),
      [...CLI_COMMANDS],
    );
    for (const r of control.cliCalls.rows) {
      positive(r.medianMs, `${r.command} median`);
      positive(r.minMs, `${r.command} fastest`);
    }
    positive(control.cliCalls.socketChange.medianMs, 'backend.weight on the socket');
    const table = controlTable(control);
    assert.match(table, /lbctl start --config/);
    assert.match(table, /Maglev table build alone .*N = 1000 backends, M = 65537/);
    assert.match(table, /Maglev table build alone .*N = 10 backends, M = 65537/);
    assert.match(table, /CLI call floor: `node -e 0`/);
    assert.match(table, /the same change as a `backend.weight` request on the socket/);
    assert.match(
      table,
      /CLI call: `lbctl backend weight VIP ADDRESS N`, spawn to exit, median of 2 \(fastest\) \| [\d.]+ ms \([\d.]+ ms\), [-\d.]+ ms above the floor \|/,
    );
  });

  test('5. fleet failover', async () => {
    // Two of the ways, once: the slowest to set up (cut-off: 10 s) is for the full run.
    const fleet = await measureFleet({ rounds: 1, ways: ['sigkill', 'stall'] });
    results.fleet = fleet;
    assert.deepEqual(
      fleet.ways.map((w) => [w.way, w.rounds]),
      [
        ['sigkill', 1],
        ['stall', 1],
      ],
    );
    for (const w of fleet.ways) {
      positive(w.withdrawnMs.median, `${w.way}: withdrawn at the router`);
      positive(w.rejoinedMs, `${w.way}: back in the route`);
      assert.equal(w.connections, 50);
      positive(w.requests, `${w.way}: requests`);
    }
    assert.match(fleetTable(fleet), /\| SIGKILL of the daemon .* \| \d+ ms \(\d+–\d+\) \| [\d.]+ s \| \d+ of 50 \| \d+ of \d+ \|/);
  });

  test('the results file has every section', () => {
    const report = renderReport(results, { command: 'smoke', startedAt: new Date(), seconds: 1, quick: true, plot: 'smoke.svg' });
    for (const heading of [
      '## Against the targets',
      '## 1. Data-plane cost per packet',
      '## 2. Packet rate',
      '## 3. HTTP',
      '## 4. Control plane',
      '## 5. Fleet failover',
      '![requests/s per system](smoke.svg)',
    ]) {
      assert.ok(report.includes(heading), `report has "${heading}"`);
    }
    assert.doesNotMatch(report, /IPv6: not measured/);
    assert.match(report, /\| a node's withdrawal at the fleet's router within 1 s \(sigkill\) \| slowest [\d.]+ ms \|/);
    assert.match(report, /\| a stuck event loop withdrawn before the kill-switch can fail open \(2\.25 s at the earliest\) \|/);
    assert.match(report, /\| no connection or request broken by a node leaving or rejoining \| \d+ of \d+ \|/);
    // The established-flow targets cover both families and both modes.
    for (const row of ['IPv4 balancer l2dsr', 'IPv4 balancer ipip', 'IPv6 balancer l2dsr', 'IPv6 balancer ipip']) {
      assert.match(report, new RegExp(`\\| ${row}: established flow: below Katran's`), `target row for ${row}`);
      assert.match(
        report,
        new RegExp(`\\| ${row}: established flow: within 2× of the floor program \\(IPv${row[3]}\\)`),
        `floor target row for ${row}`,
      );
    }
  });

  test("the README's performance section: headline tables, only between its markers", () => {
    const section = readmeSection({
      startedAt: '2026-01-02T03:04:05.000Z',
      command: 'sudo make bench',
      revision: 'abc1234',
      quick: false,
      results,
    });
    for (const text of [
      '## Performance',
      '`sudo make bench`',
      '2026-01-02',
      'abc1234',
      '](bench/results/latest.md)',
      '| IPv6 balancer ipip: established flow |',
      '| lbctl-l2dsr: lbctl, l2dsr |',
      '| target | measured | |',
      '**Fleet failover**',
    ]) {
      assert.ok(section.includes(text), `section has "${text}"`);
    }
    const readme = ['# x', 'before', README_START, 'old', 'text', README_END, 'after', ''].join('\n');
    const updated = replaceSection(readme, section);
    assert.ok(updated.startsWith(`# x\nbefore\n${README_START}\n## Performance`));
    assert.ok(updated.endsWith(`\n\n${README_END}\nafter\n`));
    assert.equal(replaceSection(updated, section), updated, 'rewriting with the same section changes nothing');
    assert.ok(!updated.includes('old\ntext'));
    assert.throws(() => replaceSection('# no markers\n', section), /must hold the lines/);
  });
});
