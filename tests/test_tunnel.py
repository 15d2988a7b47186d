"""The reverse tunnel to a hub, against a real OpenSSH server on loopback playing the hub."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from appliance.config import ApplianceConfig, MdnsConfig, ServerConfig, ServiceConfig, TunnelConfig, WyomingConfig
from appliance.daemon import create_app
from appliance.health import TunnelHealth, TunnelState
from appliance.security.bearer_auth import bearer_auth_middleware
from appliance.security.commands import print_hub_key, print_rotated_token, print_token
from appliance.security.device_key import authorized_keys_line, ensure_device_key
from appliance.security.identity_files import IdentityFiles
from appliance.security.lan import lan_middlewares
from appliance.security.token import ensure_token, read_token
from appliance.synthesis.engine import SpeechEngine
from appliance.tunnel.backoff import Backoff
from appliance.tunnel.ssh_command import TunnelTarget, ssh_options, tunnel_command
from tests.conftest import start_app
from tests.sshd import LoopbackHub, free_port, generate_key, port_open, sshd_unavailable_reason

needs_sshd = pytest.mark.skipif(sshd_unavailable_reason() is not None, reason=sshd_unavailable_reason() or "")

WAIT_S = 10.0


# --- the appliance side: the daemon's application around the session's engine -------------------------


def appliance_config(state_folder: Path, **tunnel: Any) -> ApplianceConfig:
    return ApplianceConfig(
        tunnel=TunnelConfig(**{"listener_port": free_port(), "max_backoff_s": 0.5, **tunnel}),
        service=ServiceConfig(state_folder=state_folder),
        mdns=MdnsConfig(enabled=False),
        wyoming=WyomingConfig(enabled=False),
    )


@contextlib.asynccontextmanager
async def running_appliance(config: ApplianceConfig, engine: SpeechEngine) -> AsyncIterator[None]:
    """The daemon's application started as `appliance serve` starts it, without its LAN listener: the tunnel
    and the remote listener it forwards to run."""
    runner = web.AppRunner(create_app(config, engine=engine))
    await runner.setup()
    try:
        yield
    finally:
        await runner.cleanup()


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> float:
    """Wait until `check()` holds; returns how long it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def tunnel_health(engine: SpeechEngine) -> TunnelHealth:
    tunnel = engine.health().tunnel
    assert tunnel is not None, "the tunnel's lifecycle reports at start-up"
    return tunnel


def tunnel_state(engine: SpeechEngine) -> TunnelState:
    return tunnel_health(engine).state


# --- the hub side ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class HubSetup:
    hub: LoopbackHub
    config: ApplianceConfig
    known_hosts: Path

    @property
    def remote_port(self) -> int:
        return self.config.tunnel.remote_port


@pytest.fixture
def hub_setup(tmp_path: Path) -> Any:
    """A running hub that knows this device (the `appliance hub-key` line in its authorized_keys) and an
    appliance config pointing at it with the hub's host key pinned."""
    reason = sshd_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    hub = LoopbackHub(tmp_path / "hub")
    known_hosts = tmp_path / "hub_known_hosts"
    known_hosts.write_text(hub.known_hosts_line())
    config = appliance_config(
        tmp_path / "state",
        enabled=True,
        hub_host="127.0.0.1",
        hub_port=hub.port,
        hub_user=hub.user,
        remote_port=free_port(),
        hub_known_hosts=known_hosts,
    )
    hub_key_output = io.StringIO()
    print_hub_key(config, hub_key_output, io.StringIO())
    hub.authorized_keys.write_text(hub_key_output.getvalue())
    hub.start()
    yield HubSetup(hub, config, known_hosts)
    hub.stop()


def through_hub(setup: HubSetup, path: str) -> str:
    return f"http://127.0.0.1:{setup.remote_port}{path}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- tests ----------------------------------------------------------------------------------------------


@needs_sshd
async def test_requests_through_the_hub_need_the_token_which_is_never_logged(
    hub_setup: HubSetup, engine: SpeechEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = ensure_token(hub_setup.config.service.state_folder)
    async with running_appliance(hub_setup.config, engine), aiohttp.ClientSession() as http:
        await eventually(lambda: tunnel_state(engine) == TunnelState.UP, "the tunnel is up")
        assert tunnel_health(engine).reconnects == 0

        async with http.post(through_hub(hub_setup, "/api/tts"), json={"text": "hi"}) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            body = await response.json()
            assert body["error"]["code"] == "unauthorized"
            assert body["error"]["message"]
        wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
        async with http.get(through_hub(hub_setup, "/healthz"), headers=bearer(wrong)) as response:
            assert response.status == 401
        async with http.get(through_hub(hub_setup, "/healthz"), headers={"Authorization": token}) as response:
            assert response.status == 401  # no scheme
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(through_hub(hub_setup, "/ws/tts"))
        assert refused.value.status == 401

        body = {"text": "hi", "format": "opus"}
        async with http.post(through_hub(hub_setup, "/api/tts"), headers=bearer(token), json=body) as response:
            assert response.status == 200
            assert response.content_type == "audio/ogg"
            assert (await response.read())[:4] == b"OggS"
        async with http.get(through_hub(hub_setup, "/healthz"), headers=bearer(token)) as response:
            # The remote application shares the LAN one's engine, and so its health.
            assert (await response.json())["tunnel"]["state"] == "up"
        async with http.ws_connect(through_hub(hub_setup, "/ws/tts"), headers=bearer(token)) as socket:
            await socket.send_json({"type": "speak", "text": "hi", "format": "pcm"})
            assert (await socket.receive_json(timeout=30))["type"] == "start"

    messages = [record.getMessage() for record in caplog.records]
    assert any("GET /healthz" in m for m in messages), "the access log is captured too"
    for record in caplog.records:
        captured = " ".join([record.getMessage(), str(record.args), record.exc_text or ""])
        assert token not in captured and wrong not in captured, record.name


@needs_sshd
async def test_tunnel_comes_back_within_seconds_after_the_hub_restarts(
    hub_setup: HubSetup, engine: SpeechEngine
) -> None:
    token = ensure_token(hub_setup.config.service.state_folder)
    async with running_appliance(hub_setup.config, engine), aiohttp.ClientSession() as http:
        await eventually(lambda: tunnel_state(engine) == TunnelState.UP, "the tunnel is up")

        await asyncio.to_thread(hub_setup.hub.stop)
        await eventually(lambda: tunnel_state(engine) != TunnelState.UP, "the tunnel noticed the hub is gone")
        assert not port_open(hub_setup.remote_port)
        await asyncio.sleep(1.0)  # a few failed attempts while the hub is down
        assert tunnel_state(engine) in {TunnelState.BACKOFF, TunnelState.CONNECTING}
        assert tunnel_health(engine).last_error

        await asyncio.to_thread(hub_setup.hub.start)
        took = await eventually(lambda: tunnel_state(engine) == TunnelState.UP, "the tunnel is back", timeout_s=10.0)
        async with http.get(through_hub(hub_setup, "/healthz"), headers=bearer(token)) as response:
            assert response.status == 200
        assert took < 10.0
        assert tunnel_health(engine).reconnects >= 1
    assert tunnel_state(engine) == TunnelState.STOPPED


@needs_sshd
async def test_a_hub_with_another_host_key_is_refused_and_not_trusted(
    hub_setup: HubSetup, engine: SpeechEngine, tmp_path: Path
) -> None:
    impostor = generate_key(tmp_path / "impostor_key")
    pinned = f"[127.0.0.1]:{hub_setup.hub.port} {impostor}\n"
    hub_setup.known_hosts.write_text(pinned)
    async with running_appliance(hub_setup.config, engine):
        await eventually(lambda: tunnel_state(engine) == TunnelState.REFUSED, "the tunnel refuses the hub")
        tunnel = tunnel_health(engine)
        assert tunnel.reason == "host_key"
        assert tunnel.last_error and "host key" in tunnel.last_error
        await asyncio.sleep(0.5)
        assert tunnel_state(engine) == TunnelState.REFUSED
        assert not port_open(hub_setup.remote_port)
    assert hub_setup.known_hosts.read_text() == pinned  # nothing was added or updated
    assert "Accepted publickey" not in hub_setup.hub.log.read_text()


@needs_sshd
async def test_without_a_pinned_host_key_the_tunnel_does_not_start(hub_setup: HubSetup, engine: SpeechEngine) -> None:
    hub_setup.known_hosts.unlink()
    async with running_appliance(hub_setup.config, engine):
        await eventually(lambda: tunnel_state(engine) == TunnelState.REFUSED, "the tunnel refuses to start")
        tunnel = tunnel_health(engine)
        assert tunnel.reason == "known_hosts"
        assert tunnel.last_error and "missing" in tunnel.last_error
        assert str(hub_setup.known_hosts) in tunnel.last_error
        await asyncio.sleep(0.3)
    hub_log = hub_setup.hub.log.read_text()  # only the fixture's port probe, which never reaches key exchange
    assert "preauth" not in hub_log and "publickey" not in hub_log
    assert not hub_setup.known_hosts.exists()


@needs_sshd
async def test_the_hub_key_line_confines_the_device_to_its_own_forward(hub_setup: HubSetup, tmp_path: Path) -> None:
    key = ensure_device_key(hub_setup.config.service.state_folder)
    target = TunnelTarget.from_config(hub_setup.config.tunnel, key.private_key)

    other_port = free_port()
    other_forward = tunnel_command(dataclasses.replace(target, remote_port=other_port))
    code, stderr = await run(other_forward)
    assert code != 0 and "remote port forwarding failed" in stderr
    assert not port_open(other_port)

    marker = tmp_path / "shell-ran"
    code, _ = await run(["ssh", *ssh_options(target), "127.0.0.1", f"touch {marker}"])
    assert code != 0  # /bin/false ran instead of the command
    assert not marker.exists()


async def run(argv: list[str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), WAIT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stderr.decode(errors="replace")


def test_device_key_and_token_are_private_and_made_only_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first_key = ensure_device_key(state)
    first_token = ensure_token(state)
    files = IdentityFiles.in_state_folder(state)
    before = {p: (p.stat().st_ino, p.read_bytes()) for p in (files.private_key, files.public_key, files.token)}

    second_key = ensure_device_key(state)
    assert ensure_token(state) == first_token
    assert second_key == first_key
    for path, (inode, content) in before.items():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert (path.stat().st_ino, path.read_bytes()) == (inode, content), path
    assert stat.S_IMODE(files.folder.stat().st_mode) == 0o700
    assert first_key.public_key.startswith("ssh-ed25519 ") and "appliance@" in first_key.public_key
    assert len(first_token) >= 43

    shown = io.StringIO()
    print_token(state, shown)
    assert shown.getvalue() == first_token + "\n"
    rotated = io.StringIO()
    print_rotated_token(state, rotated, io.StringIO())
    new_token = rotated.getvalue().strip()
    assert new_token != first_token and read_token(state) == new_token
    assert stat.S_IMODE(files.token.stat().st_mode) == 0o600


def test_hub_key_line_allows_only_the_devices_forward() -> None:
    line = authorized_keys_line("ssh-ed25519 AAAAC3Nza appliance@board\n", 9001)
    assert line == (
        'restrict,port-forwarding,permitlisten="localhost:9001",command="/bin/false" '
        "ssh-ed25519 AAAAC3Nza appliance@board"
    )
    with pytest.raises(ValueError):
        authorized_keys_line("ssh-ed25519 AAAAC3Nza appliance@board", 0)


async def test_lan_listener_asks_for_the_token_only_when_configured(tmp_path: Path, engine: SpeechEngine) -> None:
    config = appliance_config(tmp_path / "state")
    assert lan_middlewares(config) == []
    strict = dataclasses.replace(config, server=ServerConfig(lan_token_required=True))
    token = ensure_token(config.service.state_folder)
    listener, base_url = await start_app(create_app(strict, engine=engine))
    try:
        async with aiohttp.ClientSession() as http:
            url = f"{base_url}/healthz"
            async with http.get(url) as response:
                assert response.status == 401
            async with http.get(url, headers={"Authorization": f"bearer {token}"}) as response:
                assert response.status == 200
            async with http.get(url, headers={"Authorization": f"Basic {token}"}) as response:
                assert response.status == 401
    finally:
        await listener.stop()


def test_an_empty_token_is_a_mistake_not_an_open_door() -> None:
    with pytest.raises(ValueError):
        bearer_auth_middleware("")


async def test_a_disabled_tunnel_says_so_and_opens_no_listener(tmp_path: Path, engine: SpeechEngine) -> None:
    config = appliance_config(tmp_path / "state")
    async with running_appliance(config, engine):
        assert tunnel_health(engine) == TunnelHealth(TunnelState.DISABLED)
        assert not port_open(config.tunnel.listener_port)
    assert not (tmp_path / "state").exists()


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_good_connection() -> None:
    backoff = Backoff(max_s=8.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    backoff.reset()
    assert backoff.next_delay() == 1.0
    assert Backoff(max_s=0.5, jitter=0.0).next_delay() == 0.5
