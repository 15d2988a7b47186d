# Debian's arm64 kernel for the generic image, and a small initramfs made on the host. Sourced; defines
# generic_kernel ROOT.
#
# Installing linux-image-arm64 inside the root runs initramfs-tools under qemu-user, which took ~20 minutes here.
# Instead the package is only unpacked (mmdebstrap's extract variant runs no maintainer script; cached), its kernel
# and modules copied into the root, modules.dep made by the host's depmod, and the initramfs is a busybox with the
# few modules that find and mount the root on a virtio disk (QEMU's virt machine). The kernel is Debian's own,
# unchanged; only the packaging step differs, so dpkg does not list it in the image.

INITRAMFS_MODULES=(virtio_mmio virtio_pci virtio_blk crc32c_generic ext4)

generic_kernel() {  # generic_kernel ROOT
  local root=$1
  local args=(--mode=root --arch=arm64 --variant=extract --include=linux-image-arm64
              --dpkgopt='path-exclude=/usr/share/doc/*' "$DEBIAN_SUITE")
  local sources=("deb $DEBIAN_MIRROR $DEBIAN_SUITE main" "deb $DEBIAN_SECURITY $DEBIAN_SUITE-security main")
  local tarball
  cached_mmdebstrap debian-kernel "downloading Debian's arm64 kernel (not cached: about a minute)" \
    args sources tarball
  step "kernel and initramfs"
  local unpacked; unpacked=$(mktemp -d)
  tar -C "$unpacked" -xf "$tarball" ./boot ./lib/modules
  local version; version=$(basename "$(ls -d "$unpacked"/lib/modules/*)")
  mkdir -p "$root/boot" "$root/usr/lib/modules"
  cp "$unpacked/boot/vmlinuz-$version" "$root/boot/vmlinuz-$version"
  cp "$unpacked/boot/config-$version" "$root/boot/config-$version"
  rm -rf "$root/usr/lib/modules/$version"
  cp -a "$unpacked/lib/modules/$version" "$root/usr/lib/modules/$version"
  rm -rf "$unpacked"
  depmod -b "$root" "$version"
  make_initramfs "$root" "$version" "$root/boot/initrd.img-$version"
  ln -sf "vmlinuz-$version" "$root/boot/vmlinuz"
  ln -sf "initrd.img-$version" "$root/boot/initrd.img"
  # What a boot loader (or QEMU's -append) passes: the root by label, read-only; screen and serial consoles, the
  # last one (serial) being /dev/console, where systemd reports.
  echo "root=LABEL=root ro rootwait console=tty0 console=ttyAMA0 panic=10" >"$root/boot/cmdline.txt"
}

make_initramfs() {  # make_initramfs ROOT VERSION OUT
  local root=$1 version=$2 out=$3
  local work; work=$(mktemp -d)
  mkdir -p "$work"/{bin,dev,proc,sys,newroot,lib/modules}
  cp "$root/bin/busybox" "$work/bin/busybox"
  # Each wanted module after the modules it depends on (modules.dep lists a module's dependencies).
  local order=() m
  add_module() {
    local name=$1 line dep
    line=$(grep -E "(^|/)${name}\.ko:" "$root/usr/lib/modules/$version/modules.dep") || return 0  # built in
    for dep in ${line#*:}; do add_module "$(basename "$dep" .ko)"; done
    local path=${line%%:*}
    [[ " ${order[*]} " == *" $path "* ]] || order+=("$path")
  }
  for m in "${INITRAMFS_MODULES[@]}"; do add_module "$m"; done
  for m in "${order[@]}"; do
    cp "$root/usr/lib/modules/$version/$m" "$work/lib/modules/"
    echo "$(basename "$m")" >>"$work/lib/modules/order"
  done
  cp "$HERE/lib/initramfs-init" "$work/init"
  chmod 755 "$work/init"
  (cd "$work" && find . | cpio --quiet -o -H newc | gzip -1 >"$out")
  rm -rf "$work"
}
