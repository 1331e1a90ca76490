/** `make install` puts a working lbctl on PATH, without development packages. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { loadConfigFile } from '../../src/model/config.js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { VERSION } from '../../src/version.js';

const destdir = mkdtempSync(join(tmpdir(), 'lbctl-install-'));
after(() => rmSync(destdir, { recursive: true, force: true }));

test('make install DESTDIR=... installs lbctl under PREFIX', () => {
  execFileSync('make', ['-s', 'install', `DESTDIR=${destdir}`, 'PREFIX=/usr/local'], { cwd: PROJECT_ROOT, stdio: 'pipe' });
  const link = join(destdir, 'usr/local/bin/lbctl');
  assert.equal(readlinkSync(link), '/usr/local/lib/lbctl/bin/lbctl');
  const installed = join(destdir, 'usr/local/lib/lbctl');
  for (const path of [
    'build/bpf/xdp_balancer.bpf.o',
    'build/bpf/xdp_decap.bpf.o',
    'build/native/liblbctl.so',
    'dist/src/cli/main.js',
    'node_modules/koffi',
  ]) {
    assert.ok(existsSync(join(installed, path)), `${path} installed`);
  }
  assert.equal(existsSync(join(installed, 'node_modules/typescript')), false, 'development packages pruned');
  const version = execFileSync(join(installed, 'bin/lbctl'), ['--version'], { encoding: 'utf8' });
  assert.equal(version, `${VERSION}\n`);
});

test('make install puts a systemd unit and an example config beside it; both are valid', async () => {
  // Relies on the install of the previous test (same DESTDIR).
  const unitPath = join(destdir, 'usr/local/lib/systemd/system/lbctl.service');
  const unit = readFileSync(unitPath, 'utf8');
  assert.match(unit, /^Type=notify$/m);
  assert.match(unit, /^ExecStart=\/usr\/local\/bin\/lbctl start --config \/etc\/lbctl\/lbctl\.yaml \$LBCTL_ARGS$/m);
  assert.match(unit, /^ExecReload=\/usr\/local\/bin\/lbctl reload$/m);
  assert.doesNotMatch(unit, /@PREFIX@/);
  // systemd-analyze checks the executables exist: point them into DESTDIR.
  const checked = join(destdir, 'lbctl.service');
  writeFileSync(checked, unit.replaceAll('/usr/local/bin/lbctl', join(destdir, 'usr/local/lib/lbctl/bin/lbctl')));
  execFileSync('systemd-analyze', ['verify', checked], { stdio: 'pipe' });

  const example = join(destdir, 'etc/lbctl/lbctl.example.yaml');
  const config = await loadConfigFile(example);
  assert.equal(config.settings.interface, 'eth0');
  const [v4, v6] = config.state.vips;
  assert.equal(config.state.vips.length, 2, 'an IPv4 and an IPv6 VIP');
  assert.deepEqual(
    v4!.backends.map((b) => [b.address, b.weight, b.forward ?? v4!.forward]),
    [
      ['10.0.0.11', 2, 'l2dsr'],
      ['10.0.0.12', 1, 'l2dsr'],
      ['10.1.0.13', 1, 'ipip'],
    ],
  );
  assert.deepEqual([v4!.check.intervalMs, v4!.check.timeoutMs, v4!.check.rise, v4!.check.fall], [2000, 1000, 2, 3]);
  assert.equal(v6!.backends[0]!.family, 6);
});
