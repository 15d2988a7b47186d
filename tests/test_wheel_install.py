"""Installed as a user installs it: the wheel built from this checkout, non-editable, in a fresh environment,
finds the NPU bundles it carries — from every entry point, with no source tree in sight."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only our wheel installed in it; its third-party dependencies are borrowed from the test
    environment through a path entry (appended, so the wheel's own `appliance` comes first and the editable
    install of the checkout is not activated: .pth files in borrowed paths are not processed)."""
    root = tmp_path_factory.mktemp("wheel")
    wheels = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
        check=True,
        cwd=root,
    )
    (wheel,) = wheels.glob("rk_speech_appliance-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The wheel first, so that pip does not see the test environment's own (editable) install as satisfying it.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                   check=True, env=_clean_env())
    site = subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                   text=True, env=_clean_env()).strip()
    (Path(site) / "borrowed-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH: nothing may point the installed appliance back at the checkout."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _doctor(command: list[str], cwd: Path) -> dict:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, env=_clean_env())
    assert result.returncode in (0, 1), result.stderr  # 1: no NPU on this machine, which doctor reports
    return json.loads(result.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["appliance", "python -m appliance"])
def test_the_installed_wheel_finds_its_npu_bundle(installed: Path, tmp_path: Path, entry: str) -> None:
    bin_dir = installed / "bin"
    command = [str(bin_dir / "appliance")] if entry == "appliance" else [str(bin_dir / "python"), "-m", "appliance"]
    report = _doctor([*command, "--state", str(tmp_path / "state"), "doctor"], cwd=tmp_path)

    folder = Path(report["bundles_folder"])
    assert "site-packages" in folder.parts, folder  # the wheel's own copy, not the checkout's
    assert not folder.is_relative_to(REPO)
    voice = report["voices"]["en_US-joe-medium"]
    assert voice["usable"], voice["problem"]
    assert Path(voice["bundle"]) == folder / "en_US-joe-medium"
    assert (folder / "en_US-joe-medium" / "manifest.json").is_file()
