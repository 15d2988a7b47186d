# The Debian bookworm arm64 root every image starts from (the generic target), cached as a tarball keyed by the
# package list and this file. Sourced by targets/generic-arm64.sh; defines debian_base ROOT.

# The base holds the runtime packages (lib/packages.sh) and busybox-static, from which the generic target makes its
# small initramfs.
BASE_DEBS=("${RUNTIME_DEBS[@]}" busybox-static)

debian_base() {  # debian_base ROOT: unpacks the cached base root into ROOT, building it first when needed
  local root=$1
  local IFS=,
  local args=(--mode=root --arch=arm64 --variant=minbase --include="${BASE_DEBS[*]}"
              --aptopt='Acquire::Languages "none"'
              --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
              --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
              "$DEBIAN_SUITE")
  unset IFS
  local sources=("deb $DEBIAN_MIRROR $DEBIAN_SUITE main" "deb $DEBIAN_MIRROR $DEBIAN_SUITE-updates main"
                 "deb $DEBIAN_SECURITY $DEBIAN_SUITE-security main")
  local tarball
  cached_mmdebstrap debian-base "mmdebstrap: Debian $DEBIAN_SUITE arm64 (not cached: 5-10 minutes)" \
    args sources tarball
  step "unpacking the Debian base ($tarball)"
  tar -C "$root" --numeric-owner -xpf "$tarball"
}
