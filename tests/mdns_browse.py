"""A LAN client in a few lines, run by tests inside a network namespace: browse for a service type, resolve
it, and print what was found as one JSON line per sighting.

    python mdns_browse.py --interface 10.0.0.2 --type _rkspeech._tcp.local. --fetch-health
    python mdns_browse.py --interface 10.0.0.2 --type _rkspeech._tcp.local. --until-addresses 10.0.0.3

Exits 0 once a sighting satisfies the options, 1 (after printing {"error": ...}) when --timeout passes.
With --until-addresses it re-resolves every --recheck seconds too: a withdrawn address leaves the cache a
second after its replacement arrives, without an event of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.request
from typing import Any

from zeroconf import ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf


async def browse(args: argparse.Namespace) -> int:
    names: asyncio.Queue[str] = asyncio.Queue()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is not ServiceStateChange.Removed:
            names.put_nowait(name)

    aiozc = AsyncZeroconf(interfaces=[args.interface])
    browser = AsyncServiceBrowser(aiozc.zeroconf, [args.type], handlers=[on_change])
    wanted = None if args.until_addresses is None else set(args.until_addresses.split(","))
    name, printed = None, None
    try:
        async with asyncio.timeout(args.timeout):
            while True:
                try:
                    async with asyncio.timeout(args.recheck if name and wanted else None):
                        name = await names.get()
                except TimeoutError:
                    pass  # look again at the service already found
                assert name is not None
                sighting = await sight(aiozc, args.type, name, args.fetch_health)
                if sighting != printed:
                    print(json.dumps(sighting), flush=True)
                    printed = sighting
                if wanted is None or set(sighting["addresses"]) == wanted:
                    return 0
    except TimeoutError:
        print(json.dumps({"error": f"nothing suitable within {args.timeout} s"}), flush=True)
        return 1
    finally:
        await browser.async_cancel()
        await aiozc.async_close()


async def sight(aiozc: AsyncZeroconf, service_type: str, name: str, fetch_health: bool) -> dict[str, Any]:
    info = AsyncServiceInfo(service_type, name)
    await info.async_request(aiozc.zeroconf, 3000)
    sighting: dict[str, Any] = {
        "name": name,
        "addresses": info.parsed_addresses(),
        "port": info.port,
        "txt": info.decoded_properties,
    }
    if fetch_health:
        url = f"http://{info.parsed_addresses()[0]}:{info.port}{info.decoded_properties['health']}"
        sighting["url"] = url
        sighting["status"], sighting["body"] = await asyncio.to_thread(fetch, url)
    return sighting


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=3) as response:
        return response.status, response.read().decode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interface", required=True, help="address to browse from")
    parser.add_argument("--type", required=True, help="service type, e.g. _rkspeech._tcp.local.")
    parser.add_argument("--fetch-health", action="store_true", help="GET the TXT 'health' path")
    parser.add_argument("--until-addresses", help="keep watching until the service has exactly these (a,b)")
    parser.add_argument("--recheck", type=float, default=0.25, help="seconds between re-resolutions")
    parser.add_argument("--timeout", type=float, default=8.0)
    return asyncio.run(browse(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
