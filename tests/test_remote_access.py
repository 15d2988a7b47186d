"""The whole daemon behind a real hub (sshd on loopback): a cloud client gets 401 without the token and
streamed audio with it, over HTTP and WebSocket, through the reverse tunnel."""

from __future__ import annotations

import aiohttp

from appliance.daemon import create_app
from appliance.health import TunnelState
from appliance.security.token import ensure_token
from appliance.synthesis.engine import SpeechEngine
from tests.conftest import start_app
from tests.test_tunnel import HubSetup, bearer, eventually, hub_setup, needs_sshd, through_hub, tunnel_state

__all__ = ["hub_setup"]  # the fixture, used by name below


@needs_sshd
async def test_a_remote_client_needs_the_token_and_then_gets_real_audio(
    hub_setup: HubSetup, engine: SpeechEngine
) -> None:
    config = hub_setup.config
    token = ensure_token(config.service.state_folder)
    app = create_app(config, engine=engine)
    listener, _ = await start_app(app)
    try:
        await eventually(lambda: tunnel_state(engine) == TunnelState.UP, "the tunnel is up")
        async with aiohttp.ClientSession() as http:
            body = {"text": "Hello from the other side of the tunnel.", "format": "opus"}
            async with http.post(through_hub(hub_setup, "/api/tts"), json=body) as response:
                assert response.status == 401
                assert (await response.json())["error"]["code"] == "unauthorized"
            async with http.post(through_hub(hub_setup, "/api/tts"), json=body, headers=bearer(token)) as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == "audio/ogg; codecs=opus"
                audio = await response.read()
            assert audio[:4] == b"OggS" and len(audio) > 2000
            async with http.ws_connect(through_hub(hub_setup, "/ws/tts"), headers=bearer(token)) as ws:
                await ws.send_json({"type": "speak", "text": "And over the socket.", "format": "pcm"})
                start = await ws.receive_json(timeout=30)
                frame = await ws.receive(timeout=30)
            assert start["type"] == "start" and frame.type == aiohttp.WSMsgType.BINARY
    finally:
        await listener.stop()
