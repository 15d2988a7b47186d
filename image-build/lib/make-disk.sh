# The card's layout, made from folders without loop devices or mounts (mkfs.ext4 -d, mtools). Sourced; defines
# make_disk ROOT STATE OUT_BASENAME [BOOTLOADER_IMAGE].
#
#   0 - 16 MiB   free for a board's boot loader (the Rock 5B's U-Boot lives at sector 64)
#   1 APPLIANCE  FAT, 64 MiB: config.toml, authorized_keys, hub_known_hosts, wifi.toml — edit from any computer
#   2 root       ext4, mounted read-only; the kernel is in /boot
#   3 state      ext4, 64 MiB in the image, grown to the whole card at first boot; mounted at /data
# The result: OUT.img.xz, OUT.img.xz.sha256 and OUT.img.bmap (of the uncompressed image, for bmaptool).

MIB=1048576
CONFIG_MIB=64
STATE_MIB=64

make_disk() {  # make_disk ROOT STATE OUT_BASENAME [BOOTLOADER_IMAGE: its first 16 MiB are kept]
  local root=$1 state=$2 out=$3 bootloader=${4:-}
  local work; work=$(mktemp -d "$(dirname "$out")/disk.XXXXXX")

  step "disk: file systems"
  local root_mib=$(( $(du -sm --apparent-size "$root" | cut -f1) * 115 / 100 + 128 ))
  mkfs.ext4 -q -L root -d "$root" -m 0 -O ^orphan_file "$work/root.ext4" "${root_mib}M"
  mkfs.ext4 -q -L state -d "$state" -m 1 -O ^orphan_file "$work/state.ext4" "${STATE_MIB}M"
  mkfs.vfat -n APPLIANCE -C "$work/config.fat" $((CONFIG_MIB * 1024)) >/dev/null
  mcopy -i "$work/config.fat" -s "$HERE"/config-partition/* ::

  step "disk: partition table and image"
  local p1=16 p2=$((16 + CONFIG_MIB)) p3=$((16 + CONFIG_MIB + root_mib))
  local total=$((p3 + STATE_MIB + 1))
  local img=$out.img
  rm -f "$img"
  truncate -s "${total}M" "$img"
  if [ -n "$bootloader" ]; then dd if="$bootloader" of="$img" bs=1M count=16 conv=notrunc status=none; fi
  # Basic-data type for the FAT partition so Windows and macOS show it; the root is the one boot loaders scan.
  sfdisk -q "$img" <<PARTITIONS
label: gpt
first-lba: 34
start=$((p1 * 2048)), size=$((CONFIG_MIB * 2048)), type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=APPLIANCE
start=$((p2 * 2048)), size=$((root_mib * 2048)), type=B921B045-1DF0-41C3-AF44-4C6F280D3FAE, name=root, attrs=LegacyBIOSBootable
start=$((p3 * 2048)), size=$((STATE_MIB * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=state
PARTITIONS
  dd if="$work/config.fat" of="$img" bs=1M seek=$p1 conv=notrunc,sparse status=none
  dd if="$work/root.ext4" of="$img" bs=1M seek=$p2 conv=notrunc,sparse status=none
  dd if="$work/state.ext4" of="$img" bs=1M seek=$p3 conv=notrunc,sparse status=none
  rm -rf "$work"

  step "disk: bmap, xz, sha256"
  bmaptool -q create -o "$out.img.bmap" "$img"
  xz -T0 -1 -f "$img"   # -1: a few times faster than the default, a few percent bigger
  (cd "$(dirname "$out")" && sha256sum "$(basename "$out").img.xz" >"$(basename "$out").img.xz.sha256")
}
