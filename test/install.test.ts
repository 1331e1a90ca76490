/** `make install` puts a working lbctl on PATH, without development packages. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { PROJECT_ROOT } from '../src/paths.js';
import { VERSION } from '../src/version.js';

const destdir = mkdtempSync(join(tmpdir(), 'lbctl-install-'));
after(() => rmSync(destdir, { recursive: true, force: true }));

test('make install DESTDIR=... installs lbctl under PREFIX', () => {
  execFileSync('make', ['-s', 'install', `DESTDIR=${destdir}`, 'PREFIX=/usr/local'], { cwd: PROJECT_ROOT, stdio: 'pipe' });
  const link = join(destdir, 'usr/local/bin/lbctl');
  assert.equal(readlinkSync(link), '/usr/local/lib/lbctl/bin/lbctl');
  const installed = join(destdir, 'usr/local/lib/lbctl');
  for (const path of ['build/bpf/xdp_balancer.bpf.o', 'build/bpf/xdp_decap.bpf.o', 'build/native/liblbctl.so', 'dist/src/cli/main.js', 'node_modules/koffi']) {
    assert.ok(existsSync(join(installed, path)), `${path} installed`);
  }
  assert.equal(existsSync(join(installed, 'node_modules/typescript')), false, 'development packages pruned');
  const version = execFileSync(join(installed, 'bin/lbctl'), ['--version'], { encoding: 'utf8' });
  assert.equal(version, `${VERSION}\n`);
});
