"""The SD image's recipe, checked without building it (the boot test in .ci/run builds and boots the real one):
the rock5b lock file parses and stops the build while a published checksum is missing, a download that does not
match is refused, both targets run the one customisation step, and first boot's file handling survives re-runs."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

IMAGE_BUILD = Path(__file__).resolve().parent.parent / "image-build"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


fetch_locked = _load("fetch_locked", IMAGE_BUILD / "lib" / "fetch_locked.py")
boot_setup = _load("boot_setup", IMAGE_BUILD / "rootfs" / "usr" / "lib" / "appliance-image" / "boot_setup.py")


def test_the_rock5b_lock_file_parses_and_names_every_download() -> None:
    entries = fetch_locked.read_lock(IMAGE_BUILD / "rock5b.lock")
    assert set(entries) == {"base", "librknnrt"}
    assert "2.5.0" in entries["librknnrt"].what
    assert entries["librknnrt"].extra["install_to"] == "/usr/lib/librknnrt.so"


def test_the_rock5b_build_stops_before_anything_while_a_published_checksum_is_missing(tmp_path: Path) -> None:
    entries = fetch_locked.read_lock(IMAGE_BUILD / "rock5b.lock")
    problems = [problem for entry in entries.values() if (problem := entry.problem())]
    if not problems:
        pytest.skip("the lock file is complete")
    result = subprocess.run(
        [str(IMAGE_BUILD / "build"), "--target", "rock5b", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    for problem in problems:  # each incomplete entry is named with what it lacks
        assert problem in result.stderr, result.stderr
    assert "complete" in result.stderr and "rock5b.lock" in result.stderr
    assert not (tmp_path / "out").exists()  # stopped before making anything


def _lock(tmp_path: Path, url: str, sha256: str) -> Path:
    lock = tmp_path / "test.lock"
    lock.write_text(f'[thing]\nwhat = "a test file"\nurl = "{url}"\nsha256 = "{sha256}"\n')
    return lock


def test_a_download_that_does_not_match_the_lock_is_refused(tmp_path: Path) -> None:
    served = tmp_path / "served.bin"
    served.write_bytes(b"what the server sends today")
    wrong = hashlib.sha256(b"what the publisher published").hexdigest()
    out = tmp_path / "download.bin"
    lock = _lock(tmp_path, served.as_uri(), wrong)

    assert fetch_locked.main(["fetch_locked.py", str(lock), "thing", str(out)]) == 2
    assert not out.exists() and not out.with_name(out.name + ".part").exists()

    right = hashlib.sha256(served.read_bytes()).hexdigest()
    lock = _lock(tmp_path, served.as_uri(), right)
    assert fetch_locked.main(["fetch_locked.py", str(lock), "thing", str(out)]) == 0
    assert out.read_bytes() == served.read_bytes()

    out.write_bytes(b"a cached copy that was tampered with")
    assert fetch_locked.main(["fetch_locked.py", str(lock), "thing", str(out)]) == 2


def test_a_missing_or_malformed_checksum_is_never_filled_in(tmp_path: Path) -> None:
    for sha in ("", "TODO", "abc123"):
        entry = fetch_locked.read_lock(_lock(tmp_path, "file:///nowhere", sha))["thing"]
        assert "published sha256" in (entry.problem() or "")
        with pytest.raises(fetch_locked.Refused):
            fetch_locked.fetch(entry, tmp_path / "never")
        assert not (tmp_path / "never").exists()


def test_every_target_runs_the_same_customisation_step() -> None:
    call = '"$HERE/customize" "$work/root" "$work/state" "$work/wheels"'
    targets = sorted((IMAGE_BUILD / "targets").glob("*.sh"))
    assert {t.stem for t in targets} == {"generic-arm64", "rock5b"}
    for target in targets:
        lines = [line.strip() for line in target.read_text().splitlines()]
        assert lines.count(call) == 1, target.name
    build = (IMAGE_BUILD / "build").read_text()
    assert 'wheelhouse "$work/wheels"' in build  # the same wheels for every target


@pytest.fixture
def board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """boot_setup's paths moved into a scratch folder: the state partition and the APPLIANCE partition."""
    data = tmp_path / "data"
    monkeypatch.setattr(boot_setup, "STAMPS", data / "system" / "done")
    monkeypatch.setattr(boot_setup, "HOSTNAME_FILE", data / "system" / "hostname")
    monkeypatch.setattr(boot_setup, "WPA_CONFIG", data / "system" / "wpa_supplicant-wlan0.conf")
    (tmp_path / "fat").mkdir()
    return tmp_path


def test_a_changed_config_file_is_applied_and_a_removed_one_removed(board: Path) -> None:
    source, target = board / "fat" / "hub_known_hosts", board / "data" / "etc" / "hub_known_hosts"
    source.write_text("hub ssh-ed25519 AAAA1\n")
    boot_setup.apply_file(source, target)
    assert target.read_text() == "hub ssh-ed25519 AAAA1\n"
    before = target.stat().st_mtime_ns
    boot_setup.apply_file(source, target)  # unchanged: not rewritten
    assert target.stat().st_mtime_ns == before
    source.write_text("hub ssh-ed25519 AAAA2\n")
    boot_setup.apply_file(source, target)
    assert target.read_text() == "hub ssh-ed25519 AAAA2\n"
    assert not list(target.parent.glob(".*.tmp"))
    source.unlink()
    boot_setup.apply_file(source, target)
    assert not target.exists()


def test_a_config_file_that_fails_its_check_leaves_the_previous_one(board: Path) -> None:
    source, target = board / "fat" / "config.toml", board / "data" / "config.toml"
    source.write_text("[server]\nport = 9000\n")
    boot_setup.apply_file(source, target, check=lambda _: None)
    source.write_text("[server]\nport = 'abc'\n")
    boot_setup.apply_file(source, target, check=lambda _: "server.port: expected a whole number")
    assert target.read_text() == "[server]\nport = 9000\n"


def test_the_hostname_is_chosen_once_and_kept(board: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = boot_setup.choose_hostname()
    assert name.startswith("speech-") and len(name) == len("speech-") + 4
    monkeypatch.setattr(boot_setup, "CONFIG_PARTITION", board / "elsewhere")
    assert boot_setup.choose_hostname() == name
    assert (board / "data" / "system" / "hostname").read_text() == f"{name}\n"


def test_a_once_step_is_marked_only_after_it_ran(board: Path) -> None:
    step = boot_setup.Once("grow-state")
    assert not step.done()
    step.mark()
    assert step.done()


def test_wifi_credentials_become_a_private_wpa_supplicant_file(board: Path) -> None:
    wifi = board / "fat" / "wifi.toml"
    wifi.write_text('ssid = "Home"\npassword = "secret phrase"\ncountry = "DE"\n')
    boot_setup.apply_wifi(wifi)
    config = boot_setup.WPA_CONFIG.read_text()
    assert 'ssid="Home"' in config and 'psk="secret phrase"' in config and "country=DE" in config
    assert boot_setup.WPA_CONFIG.stat().st_mode & 0o777 == 0o600
    wifi.unlink()
    boot_setup.apply_wifi(wifi)
    assert not boot_setup.WPA_CONFIG.exists()


def test_every_runtime_dependency_is_pinned_for_the_image() -> None:
    """The image's venv installs from python-aarch64.lock only (no index): a dependency missing there fails the
    image build after the whole test suite, so it is caught here."""

    project = tomllib.loads((IMAGE_BUILD.parent / "pyproject.toml").read_text())["project"]
    wanted = {re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].lower().replace("_", "-")
              for spec in project["dependencies"]}
    lock = (IMAGE_BUILD / "python-aarch64.lock").read_text().splitlines()
    pinned = {line.split("==")[0].lower() for line in lock if line and not line.startswith("#")}
    assert wanted <= pinned, f"not in python-aarch64.lock: {sorted(wanted - pinned)}"
