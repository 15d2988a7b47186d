"""The appliance announces itself with mDNS: clients on the LAN find it, read its TXT record, follow changes,
and drop it when it stops. Real zeroconf instances on loopback; a second host in a network namespace."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info
from zeroconf import ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from appliance import __version__
from appliance.config import ApplianceConfig, MdnsConfig, ServerConfig, VoicesConfig, WyomingConfig
from appliance.daemon import create_app
from appliance.discovery import (
    APPLIANCE_SERVICE_TYPE,
    SERVICE_TYPES,
    WYOMING_SERVICE_TYPE,
    MdnsAnnouncer,
    MdnsSettings,
    TxtFacts,
    txt_properties,
)
from appliance.discovery.addresses import HostAddress, select_addresses
from appliance.health import MdnsHealth, MdnsState, VoiceHealth
from appliance.health_board import HealthBoard
from appliance.synthesis.engine import SpeechEngine
from appliance.transports import http_api, websocket_tts
from appliance.transports.routes import API_ROUTES
from appliance.transports.wyoming_tts import WYOMING

PORT = 8848
WYOMING_PORT = 10200
ANNOUNCED_TYPES = (*SERVICE_TYPES, WYOMING_SERVICE_TYPE)
DEFAULT_VOICE = "en_US-joe-medium"
BROWSE_SCRIPT = Path(__file__).with_name("mdns_browse.py")
EVENT_TIMEOUT_S = 5.0


@pytest.fixture
def board() -> HealthBoard:
    """Where an announcer reports, for tests that run it outside the daemon."""
    return HealthBoard()


@pytest.fixture
def name() -> str:
    """A fresh instance name per test, so announcements from another test never match."""
    return f"test-{uuid.uuid4().hex[:8]} speech"


def config_for(name: str, host: str = "127.0.0.1", port: int = PORT) -> ApplianceConfig:
    """Both listeners on `host`; the Wyoming listener on a port of its choosing."""
    return ApplianceConfig(
        server=ServerConfig(host=host, port=port),
        voices=VoicesConfig(default=DEFAULT_VOICE),
        mdns=MdnsConfig(instance_name=name),
        wyoming=WyomingConfig(host=host, port=0),
    )


def settings_for(name: str, port: int = PORT, node: int = 0xA1B2C3, wyoming_port: int = WYOMING_PORT
                 ) -> MdnsSettings:
    """Settings as the daemon derives them, for an appliance listening on loopback."""
    return MdnsSettings.from_config(config_for(name, port=port), API_ROUTES, hostname="testbox", node=node,
                                    wyoming_port=wyoming_port)


@contextlib.asynccontextmanager
async def running_daemon(config: ApplianceConfig, engine: SpeechEngine,
                         listener: socket.socket | None = None) -> AsyncIterator[web.Application]:
    """The daemon's application, announcing itself; serving on `listener` if given."""
    app = create_app(config, engine=engine)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        if listener is not None:
            await web.SockSite(runner, listener).start()
        yield app
    finally:
        await runner.cleanup()


async def announced_in(engine: SpeechEngine) -> MdnsHealth:
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        while (mdns := engine.health().mdns) is None or mdns.state != MdnsState.ANNOUNCED:
            await asyncio.sleep(0.05)
    return mdns


async def handler_for(app: web.Application, method: str, path: str) -> object:
    """What the application's router runs for `method path`."""
    match = await app.router.resolve(make_mocked_request(method, path, app=app))
    assert match.http_exception is None, f"{method} {path}: {match.http_exception!r}"
    return match.handler


@dataclass
class Browser:
    """A client on loopback: browses both service types and remembers what it saw, and when."""

    aiozc: AsyncZeroconf
    seen: dict[tuple[ServiceStateChange, str], float] = field(default_factory=dict)
    news: asyncio.Event = field(default_factory=asyncio.Event)

    def on_change(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        self.seen.setdefault((state_change, name), time.monotonic())
        self.news.set()

    async def wait_for(self, change: ServiceStateChange, name: str, timeout: float = EVENT_TIMEOUT_S) -> float:
        """Wait for `change` on the full service `name`; returns when it arrived (monotonic seconds)."""
        async with asyncio.timeout(timeout):
            while (change, name) not in self.seen:
                self.news.clear()
                await self.news.wait()
        return self.seen[change, name]

    async def resolve(self, service_type: str, name: str) -> AsyncServiceInfo:
        info = AsyncServiceInfo(service_type, name)
        assert await info.async_request(self.aiozc.zeroconf, 3000), f"{name} did not resolve"
        return info

    async def txt_when(
        self, service_type: str, name: str, wanted: Callable[[dict[str, str | None]], bool]
    ) -> dict[str, str | None]:
        """Resolve `name` until its TXT satisfies `wanted` (the cache follows the appliance's updates)."""
        async with asyncio.timeout(EVENT_TIMEOUT_S):
            while not wanted(txt := (await self.resolve(service_type, name)).decoded_properties):
                await asyncio.sleep(0.1)
        return txt


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    browser = Browser(AsyncZeroconf(interfaces=["127.0.0.1"]))
    service_browser = AsyncServiceBrowser(browser.aiozc.zeroconf, list(ANNOUNCED_TYPES), handlers=[browser.on_change])
    yield browser
    await service_browser.async_cancel()
    await browser.aiozc.async_close()


async def announced(announcer: MdnsAnnouncer) -> str:
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        return await announcer.announced()


async def test_a_client_finds_the_appliance_under_both_types_and_reads_its_txt(
    browser: Browser, engine: SpeechEngine, name: str
) -> None:
    async with running_daemon(config_for(name), engine) as app:
        mdns = await announced_in(engine)
        assert mdns.name == name and mdns.addresses == ("127.0.0.1",)
        for service_type in SERVICE_TYPES:
            full_name = f"{name}.{service_type}"
            await browser.wait_for(ServiceStateChange.Added, full_name)
            info = await browser.resolve(service_type, full_name)

            assert info.port == PORT
            assert info.parsed_addresses() == ["127.0.0.1"]
            assert info.server == mdns.host
            txt = info.decoded_properties
            assert {key: txt[key] for key in ("txtvers", "version", "auth", "backend", "nvoices", "voices")} == {
                "txtvers": "1",
                "version": __version__,
                "auth": "none",
                "backend": "cpu",
                "nvoices": "1",
                "voices": DEFAULT_VOICE,
            }
            # Each advertised path is served by the application's router, by the handler a client expects.
            assert await handler_for(app, "GET", txt["path"]) is http_api.page
            assert await handler_for(app, "POST", txt["api"]) is http_api.speak
            assert await handler_for(app, "GET", txt["api"]) is http_api.speak
            assert await handler_for(app, "GET", txt["ws"]) is websocket_tts.websocket_tts
            assert await handler_for(app, "GET", txt["voicesapi"]) is http_api.voices
            assert await handler_for(app, "GET", txt["health"]) is http_api.health
    assert engine.health().mdns == MdnsHealth(MdnsState.STOPPED)


async def test_home_assistant_finds_the_wyoming_service_on_the_port_that_answers_describe(
    browser: Browser, engine: SpeechEngine, name: str
) -> None:
    full_name = f"{name}.{WYOMING_SERVICE_TYPE}"
    async with running_daemon(config_for(name), engine) as app:
        mdns = await announced_in(engine)
        assert full_name in mdns.services
        await browser.wait_for(ServiceStateChange.Added, full_name)
        info = await browser.resolve(WYOMING_SERVICE_TYPE, full_name)

        port = app[WYOMING].bound_port
        assert info.port == port != PORT
        assert info.parsed_addresses() == ["127.0.0.1"]  # the listener's real address, never 0.0.0.0
        assert info.server == mdns.host
        async with AsyncTcpClient(info.parsed_addresses()[0], info.port) as client:
            await client.write_event(Describe().event())
            async with asyncio.timeout(EVENT_TIMEOUT_S):
                answer = await client.read_event()
            assert answer is not None and Info.is_type(answer.type)
    await browser.wait_for(ServiceStateChange.Removed, full_name, timeout=2.0)


async def test_no_wyoming_service_is_announced_when_wyoming_is_off(
    browser: Browser, engine: SpeechEngine, name: str
) -> None:
    config = dataclasses.replace(config_for(name), wyoming=WyomingConfig(enabled=False))
    async with running_daemon(config, engine):
        mdns = await announced_in(engine)
        assert mdns.services == tuple(f"{name}.{t}" for t in SERVICE_TYPES)
        await browser.wait_for(ServiceStateChange.Added, f"{name}.{APPLIANCE_SERVICE_TYPE}")
        with pytest.raises(TimeoutError):
            await browser.wait_for(ServiceStateChange.Added, f"{name}.{WYOMING_SERVICE_TYPE}", timeout=1.0)


async def test_a_second_appliance_with_the_same_name_is_renamed_and_both_resolve(
    browser: Browser, engine: SpeechEngine, board: HealthBoard, name: str
) -> None:
    other_board = HealthBoard()
    async with MdnsAnnouncer(settings_for(name, port=PORT, node=1), engine.health, board.report_mdns) as first:
        assert await announced(first) == name
        async with MdnsAnnouncer(
            settings_for(name, port=PORT + 1, node=2), engine.health, other_board.report_mdns
        ) as second:
            renamed = await announced(second)

            assert renamed == f"{name}-2"
            assert other_board.mdns is not None and other_board.mdns.name == renamed
            assert second.service_names == [f"{renamed}.{t}" for t in ANNOUNCED_TYPES]
            for service_type in SERVICE_TYPES:
                assert (await browser.resolve(service_type, f"{name}.{service_type}")).port == PORT
                assert (await browser.resolve(service_type, f"{renamed}.{service_type}")).port == PORT + 1
            wyoming = WYOMING_SERVICE_TYPE
            assert (await browser.resolve(wyoming, f"{name}.{wyoming}")).port == WYOMING_PORT
            assert (await browser.resolve(wyoming, f"{renamed}.{wyoming}")).port == WYOMING_PORT


async def test_browsers_drop_the_appliance_as_soon_as_it_stops(
    browser: Browser, engine: SpeechEngine, board: HealthBoard, name: str
) -> None:
    announcer = MdnsAnnouncer(settings_for(name), engine.health, board.report_mdns)
    await announcer.start()
    try:
        await announced(announcer)
        for service_type in ANNOUNCED_TYPES:
            await browser.wait_for(ServiceStateChange.Added, f"{name}.{service_type}")
    finally:
        stopped_at = time.monotonic()
        await announcer.close()

    for service_type in ANNOUNCED_TYPES:
        removed_at = await browser.wait_for(ServiceStateChange.Removed, f"{name}.{service_type}", timeout=2.0)
        assert removed_at - stopped_at < 1.5  # goodbyes, not a TTL expiry (minutes)
    assert board.mdns == MdnsHealth(MdnsState.STOPPED)


async def test_nothing_is_announced_when_mdns_is_disabled(engine: SpeechEngine, name: str) -> None:
    config = dataclasses.replace(config_for(name), mdns=MdnsConfig(enabled=False))
    async with running_daemon(config, engine):
        assert engine.health().mdns == MdnsHealth(MdnsState.DISABLED)


# A second host: a network namespace joined to ours by a veth pair.


@dataclass(frozen=True)
class VethLink:
    namespace: str
    root_interface: str
    root_address: str
    host_address: str
    """The other host's address, inside the namespace."""
    spare_address: str
    """Free address on the same /29, for a test that adds one."""


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=5, check=False)


@pytest.fixture
def veth() -> Iterator[VethLink]:
    if shutil.which("ip") is None:
        pytest.skip("needs the 'ip' command (Debian package iproute2)")
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root (CAP_NET_ADMIN)")
    pid = os.getpid()
    # A /29 per test process, so parallel runs do not collide
    subnet = f"10.231.{(pid >> 5) & 0xFF}"
    first = (pid & 0x1F) * 8
    link = VethLink(
        namespace=f"rkspeech-test-{pid}",
        root_interface=f"rkv{pid % 100000}r",
        root_address=f"{subnet}.{first + 1}",
        host_address=f"{subnet}.{first + 2}",
        spare_address=f"{subnet}.{first + 3}",
    )
    created = _ip("netns", "add", link.namespace)
    if created.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {created.stderr.strip()}")
    peer = f"rkv{pid % 100000}n"
    try:
        for command in (
            ["link", "add", link.root_interface, "type", "veth", "peer", "name", peer, "netns", link.namespace],
            ["addr", "add", f"{link.root_address}/29", "dev", link.root_interface],
            ["link", "set", link.root_interface, "multicast", "on", "up"],
            ["-n", link.namespace, "addr", "add", f"{link.host_address}/29", "dev", peer],
            ["-n", link.namespace, "link", "set", peer, "multicast", "on", "up"],
            ["-n", link.namespace, "link", "set", "lo", "up"],
        ):
            result = _ip(*command)
            assert result.returncode == 0, f"ip {' '.join(command)}: {result.stderr}"
        yield link
    finally:
        _ip("link", "del", link.root_interface)  # removes both ends
        _ip("netns", "del", link.namespace)


@dataclass
class RemoteBrowser:
    """mdns_browse.py running on the other host; reads its JSON lines."""

    process: asyncio.subprocess.Process

    async def next_sighting(self, timeout: float = 10.0) -> dict:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            line = await self.process.stdout.readline()
        assert line, f"browser exited: {await self.stderr()}"
        sighting = json.loads(line)
        assert "error" not in sighting, f"{sighting['error']}; stderr: {await self.stderr()}"
        return sighting

    async def stderr(self) -> str:
        assert self.process.stderr is not None
        async with asyncio.timeout(5):
            return (await self.process.stderr.read()).decode()


StartBrowser = Callable[..., Awaitable[RemoteBrowser]]


@pytest.fixture
async def remote_browser(veth: VethLink) -> AsyncIterator[StartBrowser]:
    processes: list[asyncio.subprocess.Process] = []

    async def start(*options: str) -> RemoteBrowser:
        process = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", veth.namespace, sys.executable, str(BROWSE_SCRIPT),
            "--interface", veth.host_address, "--type", APPLIANCE_SERVICE_TYPE, "--timeout", "10", *options,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        processes.append(process)
        return RemoteBrowser(process)

    yield start
    for process in processes:
        if process.returncode is None:
            process.kill()
        await asyncio.wait_for(process.wait(), 5)


async def test_a_second_host_discovers_the_appliance_and_reaches_its_health_endpoint(
    veth: VethLink, remote_browser: StartBrowser, engine: SpeechEngine, name: str
) -> None:
    listener = socket.create_server((veth.root_address, 0))
    port = listener.getsockname()[1]
    async with running_daemon(config_for(name, veth.root_address, port), engine, listener) as app:
        browser = await remote_browser("--fetch-health")
        wyoming_browser = await remote_browser("--type", WYOMING_SERVICE_TYPE)

        sighting = await browser.next_sighting()

        assert sighting["name"] == f"{name}.{APPLIANCE_SERVICE_TYPE}"
        assert sighting["addresses"] == [veth.root_address]
        assert sighting["port"] == port
        assert sighting["txt"]["version"] == __version__
        assert sighting["status"] == 200
        health = json.loads(sighting["body"])
        assert health["status"] == "ok" and health["version"] == __version__
        assert health["voices"][DEFAULT_VOICE]["backend"] == "cpu"
        # The record the host saw may be the first of the two service types to be registered.
        mdns = await announced_in(engine)
        assert mdns.name == name and mdns.addresses == (veth.root_address,)
        # Home Assistant on that host finds the Wyoming listener at the same real address.
        wyoming = await wyoming_browser.next_sighting()
        assert wyoming["name"] == f"{name}.{WYOMING_SERVICE_TYPE}"
        assert (wyoming["addresses"], wyoming["port"]) == ([veth.root_address], app[WYOMING].bound_port)


@pytest.mark.slow  # mDNS caches keep what they heard in the last second: the flush takes ~2.5 s
async def test_a_renumbered_interface_is_announced_with_its_new_address(
    veth: VethLink, remote_browser: StartBrowser, engine: SpeechEngine, board: HealthBoard, name: str
) -> None:
    settings = MdnsSettings(
        instance_name=name,
        host_name="testbox-speech-a1b2c3.local.",
        port=PORT,
        txt=TxtFacts(version=__version__, routes=API_ROUTES),
        interfaces=(veth.root_interface,),
        poll_interval_s=0.2,
        wyoming_port=WYOMING_PORT,
    )
    async with MdnsAnnouncer(settings, engine.health, board.report_mdns) as announcer:
        await announced(announcer)
        browser = await remote_browser("--until-addresses", veth.spare_address)
        wyoming_browser = await remote_browser("--until-addresses", veth.spare_address, "--type", WYOMING_SERVICE_TYPE)
        assert (await browser.next_sighting())["addresses"] == [veth.root_address]
        assert (await wyoming_browser.next_sighting())["addresses"] == [veth.root_address]

        # A new DHCP lease: the old address goes, a new one comes. (Deleting the old one after adding the new
        # would take both: Linux drops secondary addresses with the primary unless promote_secondaries is set.)
        assert _ip("addr", "del", f"{veth.root_address}/29", "dev", veth.root_interface).returncode == 0
        assert _ip("addr", "add", f"{veth.spare_address}/29", "dev", veth.root_interface).returncode == 0

        async with asyncio.timeout(EVENT_TIMEOUT_S):
            while (await browser.next_sighting())["addresses"] != [veth.spare_address]:
                pass
            while (await wyoming_browser.next_sighting())["addresses"] != [veth.spare_address]:
                pass
        assert board.mdns is not None and board.mdns.addresses == (veth.spare_address,)


# What goes into the announcement, without a network.


def voice_on(backend: str, name: str) -> VoiceHealth:
    return VoiceHealth(name, backend, reason="", decoder=backend, flow=backend)


def test_a_long_voice_list_is_cut_at_a_whole_name_with_the_default_voice_first() -> None:
    voices = [voice_on("cpu", f"xx_XX-voice{i:03d}-medium") for i in range(40)] + [voice_on("npu", DEFAULT_VOICE)]

    txt = txt_properties(TxtFacts(version="1.0", routes=API_ROUTES, default_voice=DEFAULT_VOICE), voices)

    listed = txt["voices"].split(",")
    assert listed[0] == DEFAULT_VOICE
    assert set(listed) <= {voice.name for voice in voices}
    assert len(listed) < len(voices)
    assert txt["nvoices"] == "41"
    assert txt["backend"] == "npu,cpu"
    assert all(len(f"{key}={value}".encode()) <= 255 for key, value in txt.items())


def test_the_listener_address_decides_what_is_announced() -> None:
    def chosen(host: str) -> tuple[tuple[str, ...] | None, bool]:
        settings = MdnsSettings.from_config(ApplianceConfig(server=ServerConfig(host=host)), API_ROUTES,
                                            hostname="rock-5b.lan")
        return settings.interfaces, settings.ipv6

    assert chosen("0.0.0.0") == (None, False)
    assert chosen("::") == (None, True)
    assert chosen("192.168.1.20") == (("192.168.1.20",), False)
    assert MdnsSettings.from_config(ApplianceConfig(), API_ROUTES, hostname="rock-5b.lan").instance_name == (
        "rock-5b speech")


def test_loopback_and_ipv6_are_announced_only_when_asked_for() -> None:
    host = [
        HostAddress("lo", 1, "127.0.0.1"),
        HostAddress("eth0", 2, "192.168.1.20"),
        HostAddress("eth0", 2, "fe80::1"),
        HostAddress("wlan0", 3, "10.0.0.7"),
    ]

    def addresses(wanted: tuple[str, ...] | None, ipv6: bool = False) -> list[str]:
        return [a.address for a in select_addresses(host, wanted, ipv6)]

    assert addresses(None) == ["192.168.1.20", "10.0.0.7"]
    assert addresses(None, ipv6=True) == ["192.168.1.20", "fe80::1", "10.0.0.7"]
    assert addresses(("eth0",)) == ["192.168.1.20"]
    assert addresses(("127.0.0.1",)) == ["127.0.0.1"]
