# The Debian packages the appliance needs at run time, on every image (the customisation step installs whatever a
# base lacks). No compiler: every Python package arrives as a wheel.
# shellcheck disable=SC2034
RUNTIME_DEBS=(systemd systemd-sysv systemd-resolved systemd-timesyncd udev dbus libnss-myhostname kmod
              openssh-server openssh-client python3 libopus0 libopusenc0 libogg0 libopusfile0 libsystemd0
              cloud-guest-utils fdisk e2fsprogs dosfstools wpasupplicant iproute2)
