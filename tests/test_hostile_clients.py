"""The real daemon process (`python -m appliance serve`) against clients that misbehave: floods of idle
connections, slow headers, malformed and random requests, more clients than it can serve at once, and a
token that must never reach its log. Afterwards it still answers, every time."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.security.token import ensure_token
from benchmarks.overload import overload, percentile
from tests.daemon_process import REPO, DaemonProcess, running_daemon

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
FIELDS = ("text", "voice", "speaker", "length_scale", "noise_scale", "noise_w", "format", "seed")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with running_daemon(tmp_path_factory.mktemp("daemon")) as process:
        yield process


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def exchange(url: str, raw: bytes, timeout_s: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Sends raw bytes as one request (with `Connection: close`); returns the answer's status, headers, body."""
    if b"Connection:" not in raw:
        raw = raw.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n", 1)
    with socket.create_connection(host_port(url), timeout=timeout_s) as sock:
        # The server may answer and close before it has read everything (a body that is too large).
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def post_json(url: str, body: object, headers: dict[str, str] | None = None, path: str = "/api/tts"
              ) -> tuple[int, dict[str, str], bytes]:
    host, port = host_port(url)
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        connection.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json",
                                                                         **(headers or {})})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def assert_json_refusal(status: int, headers: dict[str, str], body: bytes) -> dict:
    assert 400 <= status < 500, (status, body[:300])
    assert headers["content-type"].startswith("application/json"), headers
    error = json.loads(body)["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    return error


def healthz_ms(url: str) -> float:
    started = time.monotonic()
    status, _headers, _body = exchange(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200
    return (time.monotonic() - started) * 1000


# -- malformed requests ------------------------------------------------------------------------------

MALFORMED = {
    "bad request line": b"GARBAGE\r\n\r\n",
    "oversized header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
    "broken chunked body": (b"POST /api/tts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"),
    "unknown charset": (b"POST /api/tts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json; charset=foo\r\n"
                        b"Content-Length: 15\r\n\r\n{\"text\": \"Hi.\"}"),
    "gzip that is not gzip": (b"POST /api/tts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              b"Content-Encoding: gzip\r\nContent-Length: 15\r\n\r\n{\"text\": \"Hi.\"}"),
    "unknown content coding": (b"POST /api/tts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               b"Content-Encoding: zstd-foo\r\nContent-Length: 15\r\n\r\n{\"text\": \"Hi.\"}"),
    "superscript seed": "GET /api/tts?text=Hi.&seed=² HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "superscript speaker": "GET /api/tts?text=Hi.&speaker=² HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "body too large": (b"POST /api/tts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 400000\r\n\r\n" + b" " * 400_000),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_requests_get_a_json_4xx_and_the_daemon_carries_on(daemon: DaemonProcess, case: str) -> None:
    status, headers, body = exchange(daemon.lan_url, MALFORMED[case])
    assert_json_refusal(status, headers, body)
    assert healthz_ms(daemon.lan_url) < 1000


@pytest.mark.parametrize(("name", "body", "code"), [
    ("a 4,301-digit integer", '{"text": "Hi.", "seed": ' + "9" * 4301 + "}", "malformed_json"),
    ("a 400-digit integer as a number", '{"text": "Hi.", "length_scale": ' + "9" * 400 + "}", "invalid_option"),
    ("an infinite number", '{"text": "Hi.", "noise_w": 1e400}', "invalid_option"),
    ("nesting 1,000 levels deep", '{"text": "Hi.", "voice": ' + "[" * 1000 + "]" * 1000 + "}", "malformed_json"),
    ("an unknown option", '{"text": "Hi.", "speed": 2}', "unknown_option"),
    ("a lone surrogate", '{"text": "Hi \\ud800 there."}', "invalid_text"),
])
def test_json_that_python_chokes_on_is_refused_by_name(daemon: DaemonProcess, name: str, body: str,
                                                       code: str) -> None:
    raw = (f"POST /api/tts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}").encode()
    status, headers, answer = exchange(daemon.lan_url, raw)
    error = assert_json_refusal(status, headers, answer)
    assert error["code"] == code, (name, error)
    if code == "unknown_option":
        assert "speed" in error["message"]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from([*FIELDS, "speed", "x"]), JSON_VALUES, max_size=5)
       | JSON_VALUES)
def test_any_json_in_any_field_is_audio_or_a_json_4xx_never_a_5xx(daemon: DaemonProcess, body: object) -> None:
    if isinstance(body, dict) and isinstance(body.get("text"), str):
        body["text"] = body["text"][:40]  # a valid request is spoken: keep it short
    status, headers, answer = post_json(daemon.lan_url, body)
    if status == 200:
        assert headers["content-type"].startswith(("audio/", "application/ogg"))
    else:
        assert_json_refusal(status, headers, answer)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(["type", *FIELDS, "id", "speed"]), JSON_VALUES, max_size=5)
       | JSON_VALUES)
def test_any_websocket_message_gets_an_answer_and_the_socket_stays_usable(daemon: DaemonProcess,
                                                                        message: object) -> None:
    if isinstance(message, dict) and isinstance(message.get("text"), str):
        message["text"] = message["text"][:40]

    async def exchange_ws() -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{daemon.lan_url}/ws/tts") as ws:
            await ws.send_str(json.dumps(message))
            await ws.send_json({"type": "speak", "text": "Still here.", "id": "probe", "format": "pcm"})
            while True:
                reply = await ws.receive(timeout=30)
                assert reply.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), reply
                if reply.type == aiohttp.WSMsgType.TEXT:
                    event = json.loads(reply.data)
                    assert event["type"] in ("start", "end", "error", "cancelled"), event
                    if event["type"] == "end" and event["id"] == "probe":
                        return

    asyncio.run(exchange_ws())


# -- connections -------------------------------------------------------------------------------------

def test_a_flood_of_idle_tunnel_connections_never_starves_the_lan(daemon: DaemonProcess) -> None:
    """1,100 idle connections to the tunnel's listener (no token needed to connect): those over its cap are
    told 503 and closed, the daemon's file descriptors stay bounded, and the LAN answers within 100 ms."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(1100):
            sockets.append(socket.create_connection(host_port(daemon.tunnel_url), timeout=5))
        refused = 0
        for sock in sockets:
            sock.settimeout(0.05)
            with contextlib.suppress(TimeoutError):  # a timeout: held open, within the cap
                refused += sock.recv(64).startswith(b"HTTP/1.1 503")
        assert refused >= 1100 - 128
        assert daemon.open_fds() < 600
        latencies = [healthz_ms(daemon.lan_url) for _ in range(10)]
        assert max(latencies) < 100, latencies
        assert "Traceback" not in daemon.log_text()
    finally:
        for sock in sockets:
            sock.close()


def test_slow_headers_are_closed_within_10_s(daemon: DaemonProcess) -> None:
    closed_after: list[float] = []

    def slowloris() -> None:
        started = time.monotonic()
        with socket.create_connection(host_port(daemon.lan_url), timeout=20) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            try:
                while time.monotonic() - started < 15:
                    sock.sendall(b"X")
                    sock.settimeout(1.0)
                    try:
                        if sock.recv(1024) == b"":
                            break
                    except TimeoutError:
                        continue
            except OSError:
                pass
        closed_after.append(time.monotonic() - started)

    threads = [threading.Thread(target=slowloris) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(closed_after) == 20
    assert max(closed_after) < 11.5, closed_after
    assert healthz_ms(daemon.lan_url) < 1000


# -- secrets -----------------------------------------------------------------------------------------

def test_a_fuzz_burst_with_the_token_leaves_no_token_in_the_log(daemon: DaemonProcess) -> None:
    token = ensure_token(daemon.state_folder)
    auth = f"Authorization: Bearer {token}\r\n"
    tunnel = daemon.tunnel_url
    requests = [
        f"GET /healthz?token={token} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n",
        f"GET /api/tts?text=Hi.&token={token}&format=pcm HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n",
        f"GET /nowhere/{token} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n",
        f"GARBAGE {token}\r\n{auth}\r\n",
        f"GET /healthz HTTP/1.1\r\nHost: x\r\n{auth}X-Big: {'a' * 9000}\r\n\r\n",
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}{'b' * 9000}\r\n\r\n",
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token[:-1]}\r\nConnection: close\r\n\r\n",
        f"POST /api/tts HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 8\r\n"
        f"Connection: close\r\n\r\n{{\"text\":",
        f"POST /api/tts HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
        f"Transfer-Encoding: chunked\r\n\r\nq{token}\r\n",
    ]
    for _ in range(3):
        for raw in requests:
            for url in (tunnel, daemon.lan_url):
                # A connection closed without an answer is fine here; the log is what is checked.
                with contextlib.suppress(OSError, ValueError, IndexError):
                    exchange(url, raw.encode(), timeout_s=15)
    status, _headers, _body = exchange(tunnel, f"GET /healthz HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
                                       .encode())
    assert status == 200
    log = daemon.log_text()
    assert '"GET /healthz" 200 ' in log  # the access log did run (the last request, through the tunnel)
    assert token not in log
    assert token[:16] not in log


# -- overload ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_more_clients_than_streams_get_complete_audio_or_a_quick_busy(daemon: DaemonProcess) -> None:
    results, latencies = asyncio.run(overload(daemon.lan_url, clients=45))
    admitted = [r for r in results if r.status == 200]
    busy = [r for r in results if r.status == 503]
    assert len(admitted) + len(busy) == len(results), [r for r in results if r.status not in (200, 503)]
    assert admitted and busy
    assert all(r.complete for r in admitted)
    assert all(r.retry_after and r.error_code == "busy" for r in busy)
    queue_s = 0.5
    # Quiet, the last refusal leaves within ~100 ms of queue_s (README, Overload); 200 ms leaves room for a
    # loaded CI machine (0.63-0.67 s seen with other test suites running beside it).
    assert max(r.answered_s for r in busy) <= queue_s + 0.2, sorted(r.answered_s for r in busy)[-5:]
    first_audio = [r.first_audio_s for r in admitted if r.first_audio_s is not None]
    # 1.0 s before parallel windows; 0.8-1.2 s since (README, Overload): a known regression, bounded here.
    assert percentile(first_audio, 95) <= 1.5, first_audio
    assert percentile(latencies, 50) < 0.1


# -- the command line --------------------------------------------------------------------------------

def test_a_busy_port_is_one_line_on_stderr_and_exit_code_2(daemon: DaemonProcess, tmp_path: Path) -> None:
    port = host_port(daemon.lan_url)[1]
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "appliance", "--state", str(tmp_path), "serve",
                             "--host", "127.0.0.1", "--port", str(port)],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(port) in lines[0] and "in use" in lines[0], result.stderr
    assert time.monotonic() - started < 15  # refused before the voices load


def test_hub_key_without_a_remote_port_is_one_line_naming_the_key(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "appliance", "--state", str(tmp_path), "hub-key"],
                            cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "tunnel.remote_port" in lines[0], result.stderr
