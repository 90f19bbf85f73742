#!/usr/bin/env bash
# Installs everything vnsnap needs on a fresh Debian 12 machine (run as root).
# Idempotent: packages already present are skipped by apt; the guest kernel is
# extracted once into $VNSNAP_CACHE/kernel and reused while its .deb is unchanged.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${VNSNAP_CACHE:-$ROOT/.cache}"

PKGS=(
  qemu-system-x86 qemu-utils busybox-static cpio e2fsprogs iproute2
  libxml2-utils xmlsec1 libxmlsec1-dev libclang-dev pkg-config python3-venv
  openssl ca-certificates iputils-ping socat
  debootstrap  # the dom0 root of nested Xen hosts (testbed/src/xenhost)
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rust toolchain: present on the CI image; install via the distro only if absent or too
# old. Debian 12's own `cargo`/`rustc` are 1.63, far below what the workspace needs
# (rust-version in Cargo.toml); its `cargo-web`/`rustc-web` (bookworm-updates and
# -security) are the current Rust, packaged for the browsers' builds.
rust_ok() {
  local v
  v="$(cargo --version 2>/dev/null | awk '{print $2}')" || return 1
  [ -n "$v" ] && [ "$(printf '%s\n' 1.87.0 "$v" | sort -V | head -n1)" = 1.87.0 ]
}
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! rust_ok; then
  echo "setup: no cargo >= 1.87; installing Debian's cargo-web/rustc-web"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends cargo-web rustc-web >/dev/null
  hash -r
  rust_ok || { echo "setup: $(cargo --version 2>&1) is too old (need 1.87)" >&2; exit 1; }
fi

# Guest kernel: Debian's cloud kernel, taken from the package archive (apt-get
# download), never from elsewhere. We extract vmlinuz and the virtio modules.
KDIR="$CACHE/kernel"
mkdir -p "$KDIR"
if [ ! -s "$KDIR/vmlinuz" ] || [ ! -d "$KDIR/modules" ]; then
  echo "setup: fetching linux-image-cloud-amd64 from the Debian archive"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  ( cd "$tmp"
    meta_dep="$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"
    apt-get download "$meta_dep" >/dev/null
    dpkg-deb -x ./*.deb x )
  vmlinuz="$(ls "$tmp"/x/boot/vmlinuz-* | head -n1)"
  kver="$(basename "$vmlinuz" | sed 's/^vmlinuz-//')"
  rm -rf "$KDIR/modules"
  mkdir -p "$KDIR/modules"
  # Keep the module tree (compressed or not) plus modules.dep for load ordering.
  cp -a "$tmp/x/lib/modules/$kver/." "$KDIR/modules/"
  cp "$vmlinuz" "$KDIR/vmlinuz.tmp" && mv "$KDIR/vmlinuz.tmp" "$KDIR/vmlinuz"
  echo "$kver" > "$KDIR/version"
fi
echo "setup: ok (kernel $(cat "$KDIR/version"))"
