"""Is there a usable NPU here? The SoC (device tree), the runtime library, the Python binding, versions."""

from __future__ import annotations

import ctypes
import ctypes.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from .npu_rknn import RuntimeFactory

DEVICE_TREE_COMPATIBLE: Final = Path("/proc/device-tree/compatible")
DRIVER_VERSION_FILES: Final = (Path("/sys/kernel/debug/rknpu/version"), Path("/sys/module/rknpu/version"))
RUNTIME_LIBRARY: Final = "librknnrt.so"
RUNTIME_SEARCH: Final = (Path("/usr/lib/librknnrt.so"), Path("/usr/lib/aarch64-linux-gnu/librknnrt.so"),
                         Path("/usr/local/lib/librknnrt.so"))
NPU_CORES: Final = {"rk3588": 3, "rk3576": 2, "rk3568": 1, "rk3566": 1, "rk3562": 1}


@dataclass(frozen=True)
class NpuProbe:
    usable: bool
    reason: str
    """Why not, or what was found."""
    soc: str | None = None
    cores: tuple[int, ...] = ()
    runtime_version: str | None = None
    driver_version: str | None = None
    runtime_factory: RuntimeFactory | None = field(default=None, compare=False)


def read_soc(compatible_path: Path = DEVICE_TREE_COMPATIBLE) -> str | None:
    """The first supported Rockchip SoC named by the device tree, e.g. 'rk3588' (an RK3588S also says rk3588)."""
    try:
        entries = compatible_path.read_bytes().split(b"\0")
    except OSError:
        return None
    for entry in entries:
        match = re.fullmatch(rb"rockchip,(rk\d{4})s?", entry.strip())
        if match and match.group(1).decode() in NPU_CORES:
            return match.group(1).decode()
    return None


def runtime_library_version(paths: tuple[Path, ...] = RUNTIME_SEARCH) -> tuple[Path | None, str | None]:
    """Where librknnrt.so is and the version string it carries ("librknnrt version: 2.3.0 (...)")."""
    for path in paths:
        if path.exists():
            data = path.read_bytes()
            match = re.search(rb"librknnrt version: ([0-9][0-9A-Za-z.\-+]*)", data)
            return path, match.group(1).decode() if match else None
    found = ctypes.util.find_library("rknnrt")
    return (Path(found), None) if found else (None, None)


def driver_version(paths: tuple[Path, ...] = DRIVER_VERSION_FILES) -> str | None:
    for path in paths:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        match = re.search(r"v?(\d+\.\d+\.\d+)", text)
        return match.group(1) if match else text
    return None


def probe_npu(compatible_path: Path = DEVICE_TREE_COMPATIBLE,
              runtime_paths: tuple[Path, ...] = RUNTIME_SEARCH) -> NpuProbe:
    soc = read_soc(compatible_path)
    if soc is None:
        return NpuProbe(False, "not a supported Rockchip SoC (no rockchip,rk3588/rk3576/rk356x in the device tree)")
    cores = tuple(range(NPU_CORES[soc]))
    library, version = runtime_library_version(runtime_paths)
    driver = driver_version()
    if library is None:
        return NpuProbe(False, f"{soc} found but {RUNTIME_LIBRARY} is not installed", soc, cores, None, driver)
    try:
        ctypes.CDLL(str(library))
    except OSError as e:
        return NpuProbe(False, f"{library} does not load: {e}", soc, cores, version, driver)
    try:
        from rknnlite.api import RKNNLite
    except ImportError:
        return NpuProbe(False, "rknn-toolkit-lite2 (rknnlite) is not installed", soc, cores, version, driver)
    return NpuProbe(True, f"{soc} NPU with {len(cores)} core(s), librknnrt {version or 'unknown'}", soc, cores,
                    version, driver, runtime_factory=lambda: RKNNLite(verbose=False))


def version_tuple(version: str | None) -> tuple[int, ...]:
    if not version:
        return ()
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])
