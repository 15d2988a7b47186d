# The Radxa Rock 5B image: the same customisation on a pinned vendor base, Armbian's Debian 12 with the vendor 6.1
# kernel (the rknpu driver the NPU runtime needs), plus librknnrt.so 2.5.0 to match the toolkit that compiled the
# bundles. Both downloads are pinned in rock5b.lock; nothing is downloaded while an entry lacks its published
# sha256. Sourced by image-build/build; defines build_image.
#
# Not run on this project's machines (they cannot reach the vendors' servers); see the README.

LOCK=$HERE/rock5b.lock

locked() {  # locked ENTRY OUT: the verified download (cached by its sha256)
  python3 "$HERE/lib/fetch_locked.py" "$LOCK" "$1" "$2" || die "rock5b: $1 refused (see above)"
}

preflight() {  # before anything is installed or built: is the lock file complete?
  python3 "$HERE/lib/fetch_locked.py" "$LOCK" --check || die "rock5b: complete $LOCK first"
}

build_image() {  # build_image WORK OUT_BASENAME
  local work=$1 out=$2
  mkdir -p "$CACHE/downloads"
  step "rock5b: the vendor base and librknnrt.so, verified against rock5b.lock"
  locked base "$CACHE/downloads/rock5b-base.img.xz"
  locked librknnrt "$CACHE/downloads/librknnrt.so"

  step "rock5b: unpacking the vendor root"
  xz -dc "$CACHE/downloads/rock5b-base.img.xz" >"$work/vendor.img"
  # Armbian's image: U-Boot in the first 16 MiB, then one ext4 partition holding / and /boot.
  local start; start=$(sfdisk -J "$work/vendor.img" |
    python3 -c 'import json,sys; t=json.load(sys.stdin)["partitiontable"]; print(t["partitions"][-1]["start"] * 512)')
  mkdir -p "$work/vendor-root" "$work/root"
  mount -o loop,ro,offset="$start" "$work/vendor.img" "$work/vendor-root"
  tar -C "$work/vendor-root" -cf - . | tar -C "$work/root" -xpf -
  umount "$work/vendor-root"

  step "rock5b: vendor adjustments"
  install -m 644 "$CACHE/downloads/librknnrt.so" "$work/root/usr/lib/librknnrt.so"
  # Armbian's own first-boot helpers would resize the root and ask for a root password on the console: the
  # appliance grows its state partition instead and has no passwords.
  rm -f "$work/root/root/.not_logged_in_yet"
  chroot "$work/root" systemctl disable -q armbian-resize-filesystem.service armbian-firstrun.service \
    armbian-ramlog.service armbian-zram-config.service 2>/dev/null || true
  # U-Boot's boot script reads the root from armbianEnv.txt: ours, by label, read-only.
  sed -i -e '/^rootdev=/d' -e '/^rootfstype=/d' "$work/root/boot/armbianEnv.txt"
  printf 'rootdev=LABEL=root\nrootfstype=ext4\n' >>"$work/root/boot/armbianEnv.txt"

  "$HERE/customize" "$work/root" "$work/state" "$work/wheels"
  make_disk "$work/root" "$work/state" "$out" "$work/vendor.img"
}
