#!/bin/sh
# Builds the installed tree of lbctl in DIR (`make install` calls this with
# $(DESTDIR)$(PREFIX)/lib/lbctl), from a built repository: only what runs.
#   bin/lbctl and the command line's bundle dist/cli/lbctl.cjs, dist/src (no
#   tests, no benchmarks, no source maps), build/bpf
#   (not build/bench), build/native/liblbctl.so (not the testing library),
#   package.json without the development tools, the lock file and the
#   production node_modules, with koffi's prebuilt binary for this platform
#   only (it ships one for every platform it supports).
# The tree is built beside DIR and swapped in whole: a reinstall leaves no
# file of an older install behind.
set -eu

dir=${1:?usage: scripts/install-tree.sh DIR}
repo=$(cd "$(dirname "$0")/.." && pwd)
stage="$dir.new"

rm -rf "$stage"
mkdir -p "$stage/dist/cli" "$stage/build/native"
cd "$repo"
cp -r bin package-lock.json README.md node_modules "$stage/"
cp -r dist/src "$stage/dist/"
cp dist/cli/lbctl.cjs "$stage/dist/cli/"
find "$stage/dist" -name '*.map' -delete
cp -r build/bpf "$stage/build/"
install -m 755 build/native/liblbctl.so "$stage/build/native/"
# Without devDependencies (and the scripts that run them), `npm ls` in the
# installed tree checks what is there; prune then drops those packages from
# node_modules and the lock file alike.
node -e '
  const pkg = JSON.parse(require("fs").readFileSync("package.json", "utf8"));
  delete pkg.devDependencies;
  delete pkg.scripts;
  process.stdout.write(`${JSON.stringify(pkg, null, 2)}\n`);
' >"$stage/package.json"
(cd "$stage" && npm prune --omit=dev --no-audit --no-fund >/dev/null)

# koffi picks its binary at run time from build/koffi/<platform>_<arch>
# (falling back to musl_<arch> on Linux): keep the one this node loads.
binary=$(cd "$stage" && node -e '
  require("koffi");
  const loaded = Object.keys(require.cache).find((f) => f.endsWith(".node"));
  if (!loaded) throw new Error("koffi loaded no native binary");
  process.stdout.write(require("path").relative("node_modules/koffi/build/koffi", require("path").dirname(loaded)));
')
case "$binary" in
'' | */* | ..*)
	echo "install-tree.sh: unexpected koffi binary directory \"$binary\"" >&2
	exit 1
	;;
esac
find "$stage/node_modules/koffi/build/koffi" -mindepth 1 -maxdepth 1 ! -name "$binary" -exec rm -rf {} +
(cd "$stage" && node -e 'require("koffi")')

rm -rf "$dir.old"
if [ -e "$dir" ]; then mv "$dir" "$dir.old"; fi
mv "$stage" "$dir"
rm -rf "$dir.old"
