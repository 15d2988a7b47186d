"""First boot and every boot of the appliance image (run by appliance-boot-setup.service, before the network).

Once per card, each step recorded by a stamp written only after the step's result is safely on disk: grow the
state partition to the card, make the SSH host key, choose the hostname `speech-XXXX`, create the device key and
token. Every boot: set the hostname, copy the APPLIANCE partition's files (config.toml, hub_known_hosts,
authorized_keys, wifi.toml) to the state partition where they changed. Every write is a temporary file,
fsync, rename, fsync of the folder: a power cut at any moment leaves the old file or the new one, and the next
boot simply finishes the job. The system Python and its standard library only: the appliance's venv is not
needed to boot.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

CONFIG_PARTITION: Final = Path("/boot/appliance")
DATA: Final = Path("/data")
SYSTEM: Final = DATA / "system"
STAMPS: Final = SYSTEM / "done"
SSH: Final = SYSTEM / "ssh"
ETC_APPLIANCE: Final = DATA / "etc" / "appliance"
APPLIANCE_STATE: Final = Path("/var/lib/appliance")
APPLIANCE_BIN: Final = Path("/opt/appliance/venv/bin/appliance")
APPLIANCE_PYTHON: Final = Path("/opt/appliance/venv/bin/python")
HOSTNAME_FILE: Final = SYSTEM / "hostname"
MAKE_IDENTITY: Final = (
    "import sys, pathlib; from appliance.security.device_key import ensure_device_key; "
    "from appliance.security.token import ensure_token; "
    "state = pathlib.Path(sys.argv[1]); ensure_device_key(state); ensure_token(state)"
)
CHECK_CONFIG: Final = (
    "import sys, pathlib; from appliance.config import load_config; load_config(pathlib.Path(sys.argv[1]), {})"
)
WPA_CONFIG: Final = SYSTEM / "wpa_supplicant-wlan0.conf"


def log(message: str) -> None:
    print(f"boot-setup: {message}", file=sys.stderr, flush=True)


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """The old content or the new one, never a mix, whatever the moment the power goes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    fsync_folder(path.parent)


def remove_durably(path: Path) -> None:
    if path.exists():
        path.unlink()
        fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def run(*command: str | Path) -> None:
    subprocess.run([str(c) for c in command], check=True)


@dataclass(frozen=True)
class Once:
    """A step done once per card: its stamp is written after the step's own writes are on disk."""

    name: str

    @property
    def stamp(self) -> Path:
        return STAMPS / self.name

    def done(self) -> bool:
        return self.stamp.exists()

    def mark(self) -> None:
        write_atomically(self.stamp, b"")


# --- once per card ---


def grow_state_partition() -> None:
    """The state partition is the last one: grow it (and its ext4, online) to the end of the card."""
    step = Once("grow-state")
    if step.done():
        return
    device = os.path.realpath("/dev/disk/by-label/state")
    partition = Path("/sys/class/block") / Path(device).name
    disk = "/dev/" + partition.resolve().parent.name
    number = (partition / "partition").read_text().strip()
    # growpart exits 1 with NOCHANGE when there is nothing to grow (already done before a power cut).
    result = subprocess.run(["growpart", disk, number], capture_output=True, text=True)
    if result.returncode not in (0, 1) or (result.returncode == 1 and "NOCHANGE" not in result.stdout):
        raise RuntimeError(f"growpart {disk} {number}: {result.stdout}{result.stderr}")
    run("resize2fs", device)
    os.sync()
    step.mark()
    log(f"state partition {device} grown to the card")


def ensure_host_key() -> None:
    key = SSH / "ssh_host_ed25519_key"
    if key.exists() and key.with_suffix(".pub").exists():
        return
    SSH.mkdir(parents=True, exist_ok=True)
    temporary = SSH / ".new_host_key"
    for stale in (temporary, temporary.with_suffix(".pub")):
        stale.unlink(missing_ok=True)
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", temporary)
    for made in (temporary, temporary.with_suffix(".pub")):
        with made.open("rb") as f:
            os.fsync(f.fileno())
    os.replace(temporary.with_suffix(".pub"), key.with_suffix(".pub"))
    os.replace(temporary, key)  # the private key last: its presence means both are there
    fsync_folder(SSH)
    log("SSH host key created")


def choose_hostname() -> str:
    """`speech-XXXX` from the board's serial number (device tree) or, where there is none, the machine id."""
    if HOSTNAME_FILE.exists():
        return HOSTNAME_FILE.read_text().strip()
    source = b""
    serial = Path("/proc/device-tree/serial-number")
    if serial.exists():
        source = serial.read_bytes().strip(b"\0\n ")
    if not source:
        source = Path("/etc/machine-id").read_bytes().strip()
    name = "speech-" + hashlib.sha256(source).hexdigest()[:4]
    write_atomically(HOSTNAME_FILE, f"{name}\n".encode())
    log(f"hostname chosen: {name}")
    return name


def ensure_device_identity() -> None:
    """The device's SSH key (for the tunnel) and the bearer token, made by the appliance itself as its user."""
    step = Once("device-identity")
    if step.done():
        return
    subprocess.run(
        ["runuser", "-u", "appliance", "--", str(APPLIANCE_PYTHON), "-c", MAKE_IDENTITY, str(APPLIANCE_STATE)],
        check=True,
        cwd="/",
    )
    os.sync()
    step.mark()
    log("device key and token created")


# --- every boot ---


def apply_file(
    source: Path, target: Path, mode: int = 0o644, check: Callable[[Path], str | None] | None = None
) -> None:
    """The APPLIANCE partition is the truth: a changed file is copied, a removed one removed."""
    if not source.is_file():
        if target.exists():
            remove_durably(target)
            log(f"{source.name} removed from the APPLIANCE partition: removed {target}")
        return
    data = source.read_bytes()
    if target.exists() and target.read_bytes() == data:
        return
    if check is not None:
        problem = check(source)
        if problem:
            log(f"{source.name} not applied, the previous one stays: {problem}")
            return
    write_atomically(target, data, mode)
    log(f"applied {source.name} -> {target}")


def check_config(path: Path) -> str | None:
    """The appliance's own strict reader, so a typo is reported here by name instead of failing the daemon."""
    result = subprocess.run(
        [str(APPLIANCE_PYTHON), "-c", CHECK_CONFIG, str(path)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    return None if result.returncode == 0 else (result.stderr.strip().splitlines() or ["invalid"])[-1]


def apply_wifi(source: Path) -> None:
    """wifi.toml: `ssid`, `password` and optionally `country` (two letters) for wpa_supplicant on wlan0."""
    if not source.is_file():
        remove_durably(WPA_CONFIG)
        return
    try:
        wifi = tomllib.loads(source.read_text())
        ssid, password = str(wifi["ssid"]), str(wifi.get("password", ""))
        country = str(wifi.get("country", ""))
    except (tomllib.TOMLDecodeError, KeyError, UnicodeDecodeError) as e:
        log(f"wifi.toml not applied: {e!r}")
        return
    lines = ["ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev", "update_config=0"]
    if re.fullmatch(r"[A-Z]{2}", country):
        lines.append(f"country={country}")
    key = f'psk="{password}"' if password else "key_mgmt=NONE"
    lines += ["network={", f'    ssid="{ssid}"', f"    {key}", "}"]
    data = ("\n".join(lines) + "\n").encode()
    if not WPA_CONFIG.exists() or WPA_CONFIG.read_bytes() != data:
        write_atomically(WPA_CONFIG, data, 0o600)
        log("applied wifi.toml")
    if Path("/sys/class/net/wlan0").exists():
        subprocess.run(["systemctl", "start", "--no-block", "wpa_supplicant@wlan0.service"], check=False)


def main() -> int:
    """Each step on its own: one that fails is logged (and the unit reported failed) but does not stop the others,
    so the board still comes up with SSH and the appliance on their previous settings."""
    for folder in (STAMPS, SSH, ETC_APPLIANCE):
        folder.mkdir(parents=True, exist_ok=True)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("grow the state partition", grow_state_partition),
        ("SSH host key", ensure_host_key),
        ("hostname", lambda: run("hostname", choose_hostname())),
        ("APPLIANCE partition", apply_config_partition),
        ("device key and token", ensure_device_identity),
    ]
    failed = []
    for name, step in steps:
        try:
            step()
        except Exception as e:  # logged with its name; the other steps still run
            log(f"{name} failed: {e!r}")
            failed.append(name)
    return 1 if failed else 0


def apply_config_partition() -> None:
    if not CONFIG_PARTITION.is_mount():
        log("no APPLIANCE partition mounted: keeping the configuration applied before")
        return
    apply_file(CONFIG_PARTITION / "config.toml", ETC_APPLIANCE / "config.toml", check=check_config)
    apply_file(CONFIG_PARTITION / "hub_known_hosts", ETC_APPLIANCE / "hub_known_hosts")
    apply_file(CONFIG_PARTITION / "authorized_keys", SSH / "authorized_keys", mode=0o600)
    apply_wifi(CONFIG_PARTITION / "wifi.toml")


if __name__ == "__main__":
    sys.exit(main())
