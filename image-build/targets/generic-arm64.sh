# The generic arm64 image: Debian bookworm packages only, Debian's arm64 kernel, booted by QEMU's virt machine in
# the tests (and by any arm64 VM that can boot a kernel directly). Sourced by image-build/build; defines build_image.

source "$HERE/lib/debian-base.sh"
source "$HERE/lib/generic-kernel.sh"

build_image() {  # build_image WORK OUT_BASENAME
  local work=$1 out=$2
  mkdir -p "$work/root"
  debian_base "$work/root"
  generic_kernel "$work/root"
  "$HERE/customize" "$work/root" "$work/state" "$work/wheels"
  make_disk "$work/root" "$work/state" "$out"
}
