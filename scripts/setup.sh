#!/usr/bin/env bash
# Sets up pyro on a Debian 12+ (or, best effort, Ubuntu) host: installs the host packages pyro needs,
# builds pyro and its guest agent, installs both, and proves it works with one real VM.
#
#   scripts/setup.sh               everything (the README's first command)
#   scripts/setup.sh --deps-only   only the host packages (scripts/test.sh uses this)
#
# PYRO_PREFIX chooses where the binaries go (default: /usr/local as root, ~/.local otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."

deps_only=false
[ "${1:-}" = "--deps-only" ] && deps_only=true

say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# 1. The Rust toolchain is the one prerequisite we do not install.
if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || die "cargo is not installed.
help: install the stable Rust toolchain with rustup (https://rustup.rs), open a new shell, and run this again"

# 2. Host packages: QEMU (the engine), qemu-utils (qcow2 disks and snapshots), mmdebstrap (builds environments), e2fsprogs (disk images), git,
#    iproute2 (the test suite's network namespaces), python3-venv (the e2b SDK in the API's tests).
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
missing=()
have qemu-system-x86_64 || missing+=(qemu-system-x86)
have qemu-img || missing+=(qemu-utils)  # the workspaces' disks and their snapshots (qcow2)
have mmdebstrap || missing+=(mmdebstrap)
have mke2fs || missing+=(e2fsprogs)
have git || missing+=(git)  # lists a project's files for project-aware seeding
have ip || missing+=(iproute2)  # the network tests' own test hosts, in network namespaces
have mount || missing+=(mount)  # the disk-space test mounts a small tmpfs
have curl || missing+=(curl)  # the host-config tests fetch the chat hosts' own programs
# The E2B API's tests run the e2b SDK from PyPI in a venv.
{ have python3 && python3 -c 'import ensurepip' 2>/dev/null; } || missing+=(python3-venv)
if [ "$(id -u)" != 0 ] && ! have newuidmap; then missing+=(uidmap); fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=(); else
    command -v sudo >/dev/null 2>&1 || die "missing packages: ${missing[*]}; run as root or install sudo"
    sudo=(sudo)
  fi
  command -v apt-get >/dev/null 2>&1 || die "missing packages: ${missing[*]}; this script installs them with apt-get (Debian/Ubuntu)"
  say "installing ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  # No recommends: they pull in a desktop stack and may conflict with a backported qemu-utils.
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for tool in qemu-system-x86_64 qemu-img mmdebstrap mke2fs git ip mount curl; do
  have "$tool" || die "$tool is still missing after the install; install it by hand and run this again"
done
$deps_only && exit 0

# 3. Build and install pyro and its guest agent side by side (pyro finds the agent next to itself).
say "building pyro (release)"
cargo build --release --locked -p pyro-cli -p pyro-agent
if [ -n "${PYRO_PREFIX:-}" ]; then prefix=$PYRO_PREFIX
elif [ "$(id -u)" = 0 ]; then prefix=/usr/local
else prefix=$HOME/.local; fi
mkdir -p "$prefix/bin"
for bin in pyro pyro-agent; do
  install -m 0755 "target/x86_64-unknown-linux-gnu/release/$bin" "$prefix/bin/$bin.new"
  mv -f "$prefix/bin/$bin.new" "$prefix/bin/$bin"
done
say "installed pyro and pyro-agent in $prefix/bin"
case ":$PATH:" in *":$prefix/bin:"*) ;; *) say "note: add $prefix/bin to your PATH";; esac

# 4. Prove it: the first run builds the default environment (about a minute), then boots a VM.
say "running: pyro run debian:12 -- git --version"
"$prefix/bin/pyro" run debian:12 -- git --version
