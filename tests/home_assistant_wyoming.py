"""Home Assistant's own Wyoming integration against the appliance, run with Home Assistant's Python (3.13, its
own virtual environment: `script/setup-home-assistant`), by tests/test_home_assistant.py.

    python home_assistant_wyoming.py --interface 127.0.0.1 --instance "NAME" --voice en_US-joe-medium

Browses `_wyoming._tcp` as Home Assistant's zeroconf component does, turns the sighting into Home Assistant's
discovery info with its own `info_from_service`, runs the integration's discovery config flow (zeroconf step,
then the user's confirmation), and speaks a sentence through the integration's TTS entity. Prints one JSON
object: what Home Assistant saw and produced."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import wave
from types import SimpleNamespace
from typing import Any

from homeassistant.components.wyoming.config_flow import WyomingConfigFlow
from homeassistant.components.wyoming.tts import WyomingTtsProvider
from homeassistant.components.zeroconf import info_from_service
from homeassistant.core import HomeAssistant
from zeroconf import ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

WYOMING_TYPE = "_wyoming._tcp.local."


async def discover(interface: str, instance: str, timeout_s: float) -> AsyncServiceInfo:
    found: asyncio.Queue[str] = asyncio.Queue()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Added:
            found.put_nowait(name)

    aiozc = AsyncZeroconf(interfaces=[interface])
    browser = AsyncServiceBrowser(aiozc.zeroconf, [WYOMING_TYPE], handlers=[on_change])
    try:
        async with asyncio.timeout(timeout_s):
            while (name := await found.get()) != f"{instance}.{WYOMING_TYPE}":
                pass
        info = AsyncServiceInfo(WYOMING_TYPE, name)
        assert await info.async_request(aiozc.zeroconf, 3000), f"{name} did not resolve"
        return info
    finally:
        await browser.async_cancel()
        await aiozc.async_close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    service_info = await discover(args.interface, args.instance, args.timeout)
    discovery = info_from_service(service_info)
    assert discovery is not None, "Home Assistant's zeroconf component dropped the sighting"
    report: dict[str, Any] = {"discovered": {"host": discovery.host, "port": discovery.port,
                                             "addresses": [str(a) for a in discovery.ip_addresses],
                                             "name": discovery.name}}

    hass = HomeAssistant(args.config_dir)
    flow = WyomingConfigFlow()
    flow.hass = hass
    flow.handler = "wyoming"
    flow.flow_id = "appliance-test"
    flow.context = {"source": "zeroconf"}
    flow._async_current_entries = lambda include_ignore=True: []  # a fresh Home Assistant: no entries yet
    flow.async_set_unique_id = _set_unique_id(flow)
    flow._abort_if_unique_id_configured = lambda *a, **k: None

    shown = await flow.async_step_zeroconf(discovery)
    report["flow_step"] = {"type": str(shown["type"]), "step_id": shown.get("step_id"),
                           "name": (shown.get("description_placeholders") or {}).get("name")}
    created = await flow.async_step_zeroconf_confirm({})
    report["entry"] = {"type": str(created["type"]), "title": created.get("title"), "data": created.get("data")}

    entry = SimpleNamespace(entry_id="appliance-test-entry")
    service = flow._service
    assert service is not None
    provider = WyomingTtsProvider(entry, service)  # type: ignore[arg-type]
    voices = provider.async_get_supported_voices(provider.default_language) or []
    report["tts"] = {"platforms": [str(p) for p in service.platforms], "languages": provider.supported_languages,
                     "default_language": provider.default_language, "voices": [v.voice_id for v in voices]}
    kind, data = await provider.async_get_tts_audio(args.text, provider.default_language, {"voice": args.voice})
    report["audio"] = {"kind": kind}
    if data:
        with wave.open(io.BytesIO(data)) as wav:
            report["audio"].update(rate=wav.getframerate(), width=wav.getsampwidth(), channels=wav.getnchannels(),
                                   seconds=wav.getnframes() / wav.getframerate())
    await hass.async_stop(force=True)
    return report


def _set_unique_id(flow: WyomingConfigFlow) -> Any:
    async def set_unique_id(unique_id: str | None = None, **_: Any) -> None:
        flow.context["unique_id"] = unique_id

    return set_unique_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interface", required=True)
    parser.add_argument("--instance", required=True, help="the appliance's mDNS instance name")
    parser.add_argument("--voice", required=True)
    parser.add_argument("--text", default="The garage door is open.")
    parser.add_argument("--config-dir", default="/tmp")
    parser.add_argument("--timeout", type=float, default=15.0)
    report = asyncio.run(run(parser.parse_args()))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
