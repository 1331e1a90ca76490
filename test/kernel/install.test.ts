/** `make install` puts a working lbctl on PATH: only what runs, without development packages. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
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
    'dist/cli/lbctl.cjs',
    'dist/src/cli/main.js',
    'node_modules/koffi',
  ]) {
    assert.ok(existsSync(join(installed, path)), `${path} installed`);
  }
  assert.equal(existsSync(join(installed, 'node_modules/typescript')), false, 'development packages pruned');
  const version = execFileSync(join(installed, 'bin/lbctl'), ['--version'], { encoding: 'utf8' });
  assert.equal(version, `${VERSION}\n`);
});

/** Every file under dir, relative to it. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => relative(dir, join(entry.parentPath, entry.name)));
}

test('the installed tree holds only what runs: no tests, benchmarks, testing library or source maps', () => {
  // Relies on the install of the first test (same DESTDIR).
  const installed = join(destdir, 'usr/local/lib/lbctl');
  for (const path of ['dist/test', 'dist/bench', 'build/bench', 'build/native/liblbctl-testing.so', 'test', 'bench', 'src', 'native'])
    assert.equal(existsSync(join(installed, path)), false, `${path} not installed`);
  assert.deepEqual(readdirSync(join(installed, 'dist')).sort(), ['cli', 'src']);
  assert.deepEqual(readdirSync(join(installed, 'dist/cli')), ['lbctl.cjs'], "the command line's bundle, not its build record");
  assert.deepEqual(readdirSync(join(installed, 'build/native')), ['liblbctl.so']);
  const ours = filesUnder(installed).filter((f) => !f.startsWith('node_modules/'));
  assert.deepEqual(
    ours.filter((f) => /\.test\.js$|\.map$|\.ts$/.test(f)),
    [],
    'no compiled tests, source maps or TypeScript sources',
  );
  // The shipped library: the libbpf adapters and the DSR probe, none of the testing helpers.
  const symbols = execFileSync('nm', ['-D', '--defined-only', join(installed, 'build/native/liblbctl.so')], { encoding: 'utf8' });
  const exported: string[] = symbols.match(/\blbctl_\w+/g) ?? [];
  for (const name of ['lbctl_map_create', 'lbctl_test_run', 'lbctl_xdp_attach', 'lbctl_dsr_probe'])
    assert.ok(exported.includes(name), `${name} shipped`);
  for (const name of ['lbctl_test_run_durations', 'lbctl_test_run_outputs', 'lbctl_test_run_batch', 'lbctl_xdp_live_run'])
    assert.ok(!exported.includes(name), `${name} not shipped`);
});

test("the installed node_modules: production packages only, koffi's binary for this platform only, npm ls clean", () => {
  const installed = join(destdir, 'usr/local/lib/lbctl');
  const binaries = readdirSync(join(installed, 'node_modules/koffi/build/koffi'));
  assert.equal(binaries.length, 1, `one koffi binary, found ${binaries.join(', ')}`);
  assert.match(binaries[0]!, new RegExp(`^(${process.platform}|musl)_${process.arch}$`));
  const manifest = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(manifest.devDependencies, undefined, 'no development packages declared');
  assert.equal(manifest.version, VERSION);
  // Exits non-zero on a missing, invalid or extraneous package anywhere in the tree.
  execFileSync('npm', ['ls', '--all'], { cwd: installed, stdio: 'pipe' });
  // koffi loads from what is left, and every function the daemon declares binds in the installed library.
  const paths = execFileSync(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `const paths = await import('./dist/src/paths.js');
       await import('./dist/src/dataplane/libbpf.js');
       process.stdout.write(JSON.stringify([paths.NATIVE_SHIM, paths.bpfObjectPath('xdp_balancer')]));`,
    ],
    { cwd: installed, encoding: 'utf8' },
  );
  assert.deepEqual(JSON.parse(paths), [join(installed, 'build/native/liblbctl.so'), join(installed, 'build/bpf/xdp_balancer.bpf.o')]);
});

test('the installed lbctl answers --version and --help, also through a symbolic link from elsewhere, and checks a config file', () => {
  const installed = join(destdir, 'usr/local/lib/lbctl');
  const link = join(destdir, 'lbctl-on-path');
  symlinkSync(join(installed, 'bin/lbctl'), link);
  for (const command of [join(installed, 'bin/lbctl'), link]) {
    assert.equal(execFileSync(command, ['--version'], { cwd: '/', encoding: 'utf8' }), `${VERSION}\n`);
    const help = execFileSync(command, ['--help'], { cwd: '/', encoding: 'utf8' });
    assert.match(help, /^Usage: lbctl \[options\] \[command\]/);
    for (const name of ['start', 'backend', 'vip', 'status', 'decap'])
      assert.match(help, new RegExp(`^  ${name}\\b`, 'm'), `${name} listed`);
  }
  // A command whose modules load only when it runs (the config file's parser), outside the bundle.
  const example = join(PROJECT_ROOT, 'packaging/lbctl.example.yaml');
  const checked = execFileSync(join(installed, 'bin/lbctl'), ['config', 'check', example], { cwd: '/', encoding: 'utf8' });
  assert.match(checked, /3 VIPs/);
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
  const [v4, v6, allPorts] = config.state.vips;
  assert.equal(config.state.vips.length, 3, 'an IPv4 and an IPv6 VIP, a VIP of all ports');
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
  assert.deepEqual([allPorts!.vip.port, allPorts!.hash, allPorts!.check.port], [0, 'source', 443]);
});
