"""Announces the appliance with mDNS/DNS-SD and keeps the announcement true while the daemon runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final, Self

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from ..health import HealthSnapshot, MdnsHealth, MdnsState
from .addresses import HostAddress, host_addresses, select_addresses, zeroconf_interfaces
from .settings import MdnsSettings
from .txt import txt_properties

log = logging.getLogger(__name__)

FLUSH_REPEAT_DELAY_S: Final = 1.0


class MdnsAnnouncer:
    """Registers the appliance under `_http._tcp`, `_rkspeech._tcp` (and `_wyoming._tcp` when the Wyoming
    listener runs), then follows the host's addresses,
    and says goodbye on close. The TXT record lists the voices of the engine's health snapshot.

    One background task does all zeroconf work, so registration, address and TXT updates never overlap.
    Nothing is announced until the chosen interfaces have an address (a board may boot before DHCP).
    Owns the mDNS state and tells `report` every change; event-loop thread only."""

    def __init__(
        self, settings: MdnsSettings, health: Callable[[], HealthSnapshot], report: Callable[[MdnsHealth], None]
    ) -> None:
        """`health`: read at each check (`SpeechEngine.health`); `report`: `HealthBoard.report_mdns`."""
        self._settings = settings
        self._health = health
        self._report = report
        self._zc: AsyncZeroconf | None = None
        self._infos: list[AsyncServiceInfo] = []
        self._addresses: tuple[HostAddress, ...] = ()
        self._txt: dict[str, str] = {}
        self._announced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def service_names(self) -> list[str]:
        """Full service names as finally registered (empty until announced)."""
        return [info.name for info in self._infos]

    @property
    def instance_name(self) -> str | None:
        """The instance name as finally registered, after any rename on a conflict."""
        return _instance_of(self._infos[0]) if self._infos else None

    async def start(self) -> None:
        self._report(MdnsHealth(MdnsState.STARTING))
        self._task = asyncio.create_task(self._run(), name="mdns announcer")

    async def announced(self) -> str:
        """Wait until every service is registered; returns the final instance name."""
        await self._announced.wait()
        assert self.instance_name is not None
        return self.instance_name

    async def close(self) -> None:
        """Stop following changes and send goodbyes, so browsers drop the appliance at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._stop_zeroconf()
        self._report(MdnsHealth(MdnsState.STOPPED))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _run(self) -> None:
        while True:
            try:
                await self._reconcile()
            except Exception as exc:  # a socket or zeroconf failure: start over at the next poll
                log.exception("mDNS announcement failed; retrying in %.0f s", self._settings.poll_interval_s)
                await self._stop_zeroconf()
                self._report(MdnsHealth(MdnsState.ERROR, error=str(exc)))
            await asyncio.sleep(self._settings.poll_interval_s)

    async def _reconcile(self) -> None:
        addresses = select_addresses(host_addresses(), self._settings.interfaces, self._settings.ipv6)
        # The engine's voices and their backends are fixed once it is loaded, before the announcer starts;
        # reading them at each check keeps the record true should that ever change.
        txt = txt_properties(self._settings.txt, self._health().voices)
        if self._zc is None:
            if addresses:
                await self._register(addresses, txt)
            else:
                self._report(MdnsHealth(MdnsState.WAITING))
        elif addresses and addresses != self._addresses:
            await self._publish(self._zc, addresses, txt)
            log.info("mDNS: addresses now %s", [a.address for a in addresses])
        elif txt != self._txt:
            await self._publish(self._zc, addresses or self._addresses, txt)
            log.info("mDNS: TXT now voices=%s backend=%s", txt["voices"], txt["backend"])

    async def _register(self, addresses: tuple[HostAddress, ...], txt: dict[str, str]) -> None:
        zc = AsyncZeroconf(interfaces=zeroconf_interfaces(addresses), ip_version=_ip_version(addresses))
        self._zc = zc
        infos = [self._info(t, f"{self._settings.instance_name}.{t}", port, addresses, txt)
                 for t, port in self._settings.services]
        # Probing takes about a second per service, so all types probe at once; another appliance with our
        # name holds them all, so all get the same new name.
        broadcasts = await asyncio.gather(*(zc.async_register_service(info, allow_name_change=True) for info in infos))
        self._infos, self._addresses, self._txt = infos, addresses, txt
        if len({_instance_of(info) for info in infos}) > 1:
            log.warning("mDNS names differ between service types: %s", self.service_names)
        self._report_announced()
        self._announced.set()
        log.info("mDNS: announced %s on %s", self.service_names, [a.address for a in addresses])
        await self._wait_all(broadcasts)

    async def _publish(self, zc: AsyncZeroconf, addresses: tuple[HostAddress, ...], txt: dict[str, str]) -> None:
        """Announce changed addresses or TXT; rebinds zeroconf's sockets when the addresses changed."""
        # Registry first, then sockets: the re-announcement on new interfaces then carries the new records.
        broadcasts = await self._update_services(zc, addresses, txt)
        if addresses != self._addresses:
            await zc.async_update_interfaces(interfaces=zeroconf_interfaces(addresses))
        self._addresses, self._txt = addresses, txt
        self._report_announced()
        await self._wait_all(broadcasts)
        # A cache keeps records heard within the last second beside their replacement (RFC 6762 §10.2) and
        # zeroconf's announcements all go out within half a second; one more a second later makes the
        # cache-flush bit drop the old address or TXT instead of leaving it until its TTL runs out.
        await asyncio.sleep(FLUSH_REPEAT_DELAY_S)
        await self._wait_all(await self._update_services(zc, addresses, txt))

    async def _update_services(
        self, zc: AsyncZeroconf, addresses: tuple[HostAddress, ...], txt: dict[str, str]
    ) -> list[Awaitable[Any]]:
        self._infos = [self._info(info.type, info.name, info.port, addresses, txt) for info in self._infos]
        return [await zc.async_update_service(info) for info in self._infos]

    def _info(
        self, service_type: str, name: str, port: int, addresses: tuple[HostAddress, ...], txt: dict[str, str]
    ) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            service_type,
            name,
            port=port,
            properties=dict(txt),
            server=self._settings.host_name,
            parsed_addresses=[a.address for a in addresses],
        )

    async def _stop_zeroconf(self) -> None:
        zc, self._zc = self._zc, None
        self._infos, self._addresses, self._txt = [], (), {}
        self._announced.clear()
        if zc is not None:
            await zc.async_close()  # unregisters everything first: the goodbye packets (TTL 0)

    @staticmethod
    async def _wait_all(broadcasts: list[Awaitable[Any]]) -> None:
        await asyncio.gather(*broadcasts)

    def _report_announced(self) -> None:
        self._report(MdnsHealth(
            MdnsState.ANNOUNCED,
            name=self.instance_name,
            services=tuple(self.service_names),
            host=self._settings.host_name,
            port=self._settings.port,
            addresses=tuple(a.address for a in self._addresses),
        ))


def _instance_of(info: AsyncServiceInfo) -> str:
    return info.name[: -len(info.type) - 1]


def _ip_version(addresses: tuple[HostAddress, ...]) -> IPVersion:
    has_v6 = any(a.is_ipv6 for a in addresses)
    if not has_v6:
        return IPVersion.V4Only
    return IPVersion.All if any(not a.is_ipv6 for a in addresses) else IPVersion.V6Only
