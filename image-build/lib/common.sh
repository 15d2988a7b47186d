# Shared by the image-build scripts: logging with elapsed times, the cache folder, host tools.
# Sourced, not run.

CACHE=${IMAGE_BUILD_CACHE:-/var/cache/appliance-image-build}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)   # image-build/
REPO=$(cd "$HERE/.." && pwd)
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY=${DEBIAN_SECURITY:-http://deb.debian.org/debian-security}

step_started=$SECONDS
step() {  # step NAME: prints how long the previous step took, then names the next one
  echo "image-build: [$((SECONDS - step_started))s] $*" >&2
  step_started=$SECONDS
}
die() { echo "image-build: error: $*" >&2; exit 1; }

# Key for a cache entry: the sha256 of the files and strings that make it.
cache_key() {
  { for a in "$@"; do if [ -f "$a" ]; then cat "$a"; else printf '%s\n' "$a"; fi; done; } | sha256sum | cut -c1-16
}

# cached_mmdebstrap NAME WHAT ARGS SOURCES OUT: sets the variable named OUT to the path of a tarball that mmdebstrap
# made with the arrays named ARGS (options and suite) and SOURCES, building it first (saying WHAT) when no cached one
# has that key. (A variable, not output: `step` must run in this shell to time the steps.)
# Keyed by exactly what mmdebstrap is asked for (newer packages in the archive need a new key: see README).
cached_mmdebstrap() {
  local name=$1 what=$2
  local -n mm_args=$3 mm_sources=$4 mm_out=$5
  local mm_key; mm_key=$(cache_key "${mm_args[*]}" "${mm_sources[*]}")
  local mm_tarball=$CACHE/$name-$mm_key.tar
  if [ ! -f "$mm_tarball" ]; then
    step "$what"
    mkdir -p "$CACHE"
    mmdebstrap "${mm_args[@]}" "$CACHE/incomplete-$name.tar" "${mm_sources[@]}" >&2
    mv "$CACHE/incomplete-$name.tar" "$mm_tarball"
  fi
  mm_out=$mm_tarball
}

# The Debian packages the build host needs; CI is a fresh machine, so we install them ourselves.
HOST_DEBS=(mmdebstrap qemu-user-static binfmt-support arch-test dosfstools mtools e2fsprogs fdisk bmap-tools xz-utils
           cpio kmod python3 ca-certificates git)
ensure_host_debs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "please install these Debian packages: ${missing[*]}"
  echo "image-build: installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# arm64 programs in the image's root run through qemu-user: binfmt_misc must be mounted and the handler on.
ensure_arm64_emulation() {
  mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
  arch-test arm64 >/dev/null || die "cannot run arm64 programs (binfmt_misc/qemu-user-static)"
}
