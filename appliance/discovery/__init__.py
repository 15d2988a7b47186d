"""mDNS/DNS-SD discovery: the appliance announces itself so LAN clients find it without an address."""

from .announcer import MdnsAnnouncer
from .context import mdns_context
from .names import APPLIANCE_SERVICE_TYPE, HTTP_SERVICE_TYPE, SERVICE_TYPES, WYOMING_SERVICE_TYPE
from .settings import MdnsSettings
from .txt import TxtFacts, txt_properties

__all__ = [
    "APPLIANCE_SERVICE_TYPE",
    "HTTP_SERVICE_TYPE",
    "SERVICE_TYPES",
    "WYOMING_SERVICE_TYPE",
    "MdnsAnnouncer",
    "MdnsSettings",
    "TxtFacts",
    "mdns_context",
    "txt_properties",
]
