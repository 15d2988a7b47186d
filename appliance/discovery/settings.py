"""What the announcer needs to know, taken from the appliance configuration in one place."""

from __future__ import annotations

import ipaddress
import logging
import socket
import uuid
from dataclasses import dataclass
from typing import Final

from .. import __version__
from ..config import ApplianceConfig
from ..transports.routes import ApiRoutes
from .names import SERVICE_TYPES, WYOMING_SERVICE_TYPE, host_name, instance_name
from .txt import TxtFacts

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL_S: Final = 5.0


@dataclass(frozen=True)
class MdnsSettings:
    instance_name: str
    """Wanted instance name; zeroconf appends '-2', '-3'… when another device has it."""
    host_name: str
    """SRV target, e.g. 'rock-5b-speech-a1b2c3.local.'."""
    port: int
    txt: TxtFacts
    interfaces: tuple[str, ...] | None = None
    """Interface names or addresses to announce on (and announce); None means all but loopback."""
    ipv6: bool = False
    """Also announce IPv6 addresses of the chosen interfaces (IPv4 only by default)."""
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    """How often the host's addresses are read to notice a change (DHCP renewals, Wi-Fi roaming)."""
    wyoming_port: int | None = None
    """Port of the Wyoming listener, announced as `_wyoming._tcp` on the same addresses; None: not served."""

    @property
    def services(self) -> tuple[tuple[str, int], ...]:
        """(service type, port) of every service announced."""
        services = tuple((service_type, self.port) for service_type in SERVICE_TYPES)
        if self.wyoming_port is not None:
            services += ((WYOMING_SERVICE_TYPE, self.wyoming_port),)
        return services

    @classmethod
    def from_config(
        cls,
        config: ApplianceConfig,
        routes: ApiRoutes,
        hostname: str | None = None,
        node: int | None = None,
        wyoming_port: int | None = None,
    ) -> MdnsSettings:
        """Announce what the LAN listener serves (`routes`: the daemon's route table): `server.host` 0.0.0.0
        means every IPv4 interface, '::' adds IPv6, and a specific address limits the announcement to that
        address. The Wyoming listener is announced on the same addresses when it runs and listens on them
        (`wyoming_port`: the port it bound, if not the configured one)."""
        hostname = socket.gethostname() if hostname is None else hostname
        interfaces, ipv6 = _interfaces_for_listener(config.server.host)
        return cls(
            instance_name=instance_name(config.mdns.instance_name, hostname),
            host_name=host_name(hostname, uuid.getnode() if node is None else node),
            port=config.server.port,
            txt=TxtFacts(
                version=__version__,
                routes=routes,
                default_voice=config.voices.default,
                token_required=config.server.lan_token_required,
            ),
            interfaces=interfaces,
            ipv6=ipv6,
            wyoming_port=_wyoming_port(config, wyoming_port),
        )


def _wyoming_port(config: ApplianceConfig, bound: int | None) -> int | None:
    wyoming = config.wyoming
    if not wyoming.enabled:
        return None
    if wyoming.host not in ("", "0.0.0.0", "::", config.server.host):
        log.warning("wyoming.host %r differs from server.host %r; _wyoming._tcp is not announced",
                    wyoming.host, config.server.host)
        return None
    return bound if bound is not None else wyoming.port


def _interfaces_for_listener(host: str) -> tuple[tuple[str, ...] | None, bool]:
    if host in ("", "0.0.0.0"):
        return None, False
    if host == "::":
        return None, True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        log.warning("server.host %r is not an IP address; announcing every IPv4 interface", host)
        return None, False
    return (str(address),), address.version == 6
