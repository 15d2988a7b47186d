"""Home Assistant's own Wyoming integration finds the appliance over mDNS, adds it, and speaks through it.

Home Assistant runs on Python 3.13 in its own virtual environment (`script/setup-home-assistant`, or
HOME_ASSISTANT_PYTHON naming a Python with homeassistant installed); without it this test is skipped. The
appliance is the real daemon in its own process, announcing itself on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_process import REPO, DaemonProcess, running_daemon

HOME_ASSISTANT_PYTHON = Path(os.environ.get("HOME_ASSISTANT_PYTHON", REPO / ".venv-home-assistant/bin/python"))
SCRIPT = Path(__file__).with_name("home_assistant_wyoming.py")
VOICE = "en_US-joe-medium"

pytestmark = pytest.mark.skipif(not HOME_ASSISTANT_PYTHON.exists(),
                                reason="needs Home Assistant's Python: run script/setup-home-assistant")


@pytest.fixture(scope="module")
def instance() -> str:
    return f"ha-test-{uuid.uuid4().hex[:8]} speech"


@pytest.fixture(scope="module")
def announced_daemon(tmp_path_factory: pytest.TempPathFactory, instance: str) -> Iterator[DaemonProcess]:
    with running_daemon(tmp_path_factory.mktemp("home-assistant"), mdns_instance=instance) as daemon:
        yield daemon


def test_home_assistant_discovers_adds_and_speaks_through_the_appliance(
        announced_daemon: DaemonProcess, instance: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(HOME_ASSISTANT_PYTHON), str(SCRIPT), "--interface", "127.0.0.1", "--instance", instance,
         "--voice", VOICE, "--config-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])

    port = announced_daemon.wyoming_port
    assert report["discovered"] == {"host": "127.0.0.1", "port": port, "addresses": ["127.0.0.1"],
                                    "name": f"{instance}._wyoming._tcp.local."}
    assert report["flow_step"] == {"type": "form", "step_id": "zeroconf_confirm", "name": "rk-speech-appliance"}
    assert report["entry"] == {"type": "create_entry", "title": "rk-speech-appliance",
                               "data": {"host": "127.0.0.1", "port": port}}
    assert report["tts"] == {"platforms": ["tts"], "languages": ["en_US"], "default_language": "en_US",
                             "voices": [VOICE]}
    audio = report["audio"]
    assert (audio["kind"], audio["rate"], audio["width"], audio["channels"]) == ("wav", 22050, 2, 1)
    assert audio["seconds"] > 1.0
