"""Prometheus metrics as an operator sees them: the real daemon's /metrics after requests over HTTP and the
WebSocket (spoken, refused, rejected as busy, cancelled), on both listeners, scraped by a real Prometheus
server whose HTTP API answers for `up` and the first audio's p95; the shipped alert rules pass promtool."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from appliance.security.token import ensure_token
from appliance.synthesis.request_stats import FIRST_AUDIO_BUCKETS_S, FixedHistogram
from tests.daemon_process import DaemonProcess, running_daemon, stop_process
from tests.sshd import free_port

REPO = Path(__file__).resolve().parent.parent
ALERT_RULES = REPO / "monitoring" / "appliance-alerts.yml"
SENTENCE = "The kitchen timer is done."
LONG_TEXT = " ".join(["A long announcement keeps the only synthesis stream busy for a while."] * 12)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One stream at once, and a short wait for it: a second request while one streams is refused as busy."""
    with running_daemon(tmp_path_factory.mktemp("metrics"), "[synthesis]\nmax_streams = 1\nqueue_s = 0.3\n") as d:
        yield d


def scrape(url: str, token: str | None = None) -> Samples:
    request = urllib.request.Request(f"{url}/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def grown(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def speak_http(url: str, text: str) -> tuple[int, float, bytes, float]:
    """Status, seconds from sending the request to the first body bytes, the body, and its audio seconds
    (16-bit mono WAV after a 44-byte header)."""
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        async with session.post(f"{url}/api/tts", json={"text": text, "format": "wav"}) as response:
            first = await response.content.readany()
            first_s = time.monotonic() - started
            body = first + await response.read()
            rate = int(response.headers.get("X-Sample-Rate", "0"))
    return response.status, first_s, body, (len(body) - 44) / 2 / rate if rate else 0.0


async def until(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict:
    """The next JSON message of type `kind` ("audio": the next binary frame), skipping the others. Bounded: each
    wait times out, and a closed socket fails the assertion."""
    while True:
        message = await ws.receive(timeout=60)
        assert message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), message
        if message.type == aiohttp.WSMsgType.BINARY:
            if kind == "audio":
                return {}
        elif (body := json.loads(message.data))["type"] == kind:
            return body


async def test_requests_over_http_and_the_websocket_are_counted_by_transport_format_and_outcome(
        daemon: DaemonProcess) -> None:
    before = scrape(daemon.lan_url)
    client_first_audio = []
    audio_s = 0.0
    for text in ("The first kitchen timer is done.", "The second kitchen timer is done."):  # not cached yet
        status, first_s, _body, seconds = await speak_http(daemon.lan_url, text)
        assert status == 200
        client_first_audio.append(first_s)
        audio_s += seconds
    status, _first, body, _seconds = await speak_http(daemon.lan_url, "   ")
    assert status == 400 and json.loads(body)["error"]["code"] == "empty_text"
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{daemon.lan_url}/ws/tts") as ws:
        await ws.send_json({"type": "speak", "text": "The third kitchen timer is done.", "format": "pcm",
                            "id": "short"})
        end = await until(ws, "end")
        audio_s += end["audio_seconds"]
        client_first_audio.append(end["first_audio_ms"] / 1000)  # from the message's arrival
    after = scrape(daemon.lan_url)

    def delta(name: str, **labels: str) -> float:
        return grown(before, after, name, **labels)

    assert delta("appliance_requests_total", transport="http", format="wav", outcome="ok") == 2
    assert delta("appliance_requests_total", transport="http", format="wav", outcome="bad_request") == 1
    assert delta("appliance_requests_total", transport="websocket", format="pcm", outcome="ok") == 1
    assert delta("appliance_first_audio_seconds_count") == 3
    assert delta("appliance_realtime_factor_count") == 3
    assert delta("appliance_audio_seconds_total") == pytest.approx(audio_s, abs=0.01)
    # The daemon's clock starts once the request is read and stops as the bytes leave: within the clients' own.
    assert 0 < delta("appliance_first_audio_seconds_sum") <= sum(client_first_audio)
    assert delta("appliance_windows_total") >= 3  # three sentences synthesised, none from the phrase cache
    assert 0 < delta("appliance_realtime_factor_sum") / 3 < 5


async def test_a_busy_stream_shows_as_active_and_rejects_then_a_barge_in_counts_as_cancelled(
        daemon: DaemonProcess) -> None:
    before = scrape(daemon.lan_url)
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{daemon.lan_url}/ws/tts") as ws:
        await ws.send_json({"type": "speak", "text": LONG_TEXT, "format": "pcm", "id": "long"})
        await until(ws, "audio")  # its audio has started: the only stream is taken
        during = await asyncio.to_thread(scrape, daemon.lan_url)
        status, _first, body, _seconds = await speak_http(daemon.lan_url, SENTENCE)
        await ws.send_json({"type": "cancel"})
        assert (await until(ws, "cancelled"))["ids"] == ["long"]
    assert status == 503 and json.loads(body)["error"]["code"] == "busy"
    assert value(during, "appliance_streams_active") == 1
    assert value(during, "appliance_streams_max") == 1
    after = scrape(daemon.lan_url)
    assert value(after, "appliance_streams_active") == 0
    assert grown(before, after, "appliance_streams_rejected_total") == 1
    requests = "appliance_requests_total"
    assert grown(before, after, requests, transport="http", format="wav", outcome="rejected_busy") == 1
    assert grown(before, after, requests, transport="websocket", format="pcm", outcome="cancelled") == 1
    # The cancelled one had sent audio: its wait counts, its real-time factor (it did not finish) does not.
    assert grown(before, after, "appliance_first_audio_seconds_count") == 1
    assert grown(before, after, "appliance_realtime_factor_count") == 0


def test_metrics_carry_the_process_loop_lag_and_decoder_families(daemon: DaemonProcess) -> None:
    samples = scrape(daemon.lan_url)
    names = {name for name, _labels in samples}
    assert value(samples, "process_resident_memory_bytes") > 10_000_000
    assert "python_info" in names
    assert value(samples, "appliance_event_loop_lag_seconds", quantile="0.99") >= 0
    npu_windows = ("appliance_decoder_windows_total", frozenset({("backend", "npu")}))
    assert samples[npu_windows] == 0  # this machine has no NPU
    assert value(samples, "appliance_windows_total") > 0  # the requests of the tests before
    assert "appliance_fallbacks_total" in names


async def test_cache_metrics_follow_the_phrase_cache(daemon: DaemonProcess) -> None:
    def cache_health() -> dict:
        with urllib.request.urlopen(f"{daemon.lan_url}/healthz", timeout=10) as response:
            return json.load(response)["cache"]

    text = "The cache metrics count this sentence twice."
    before, entries = scrape(daemon.lan_url), cache_health()["entries"]
    assert (await speak_http(daemon.lan_url, text))[0] == 200
    deadline = time.monotonic() + 10
    while cache_health()["entries"] == entries:  # stored off the event loop, just after the answer
        assert time.monotonic() < deadline, "the sentence was never stored"
        await asyncio.sleep(0.05)
    assert (await speak_http(daemon.lan_url, text))[0] == 200
    after = scrape(daemon.lan_url)
    assert grown(before, after, "appliance_cache_misses_total") == 1
    assert grown(before, after, "appliance_cache_hits_total") == 1
    cache = cache_health()
    assert value(after, "appliance_cache_bytes") == cache["bytes"] > 0
    assert value(after, "appliance_cache_entries") == cache["entries"]


def test_the_tunnel_listener_serves_metrics_only_with_the_token(daemon: DaemonProcess) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(daemon.tunnel_url)
    assert refused.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as wrong:
        scrape(daemon.tunnel_url, "not-the-token")
    assert wrong.value.code == 401
    samples = scrape(daemon.tunnel_url, ensure_token(daemon.state_folder))
    assert value(samples, "appliance_streams_max") == 1


# -- a real Prometheus server ---------------------------------------------------------------------------


@contextlib.contextmanager
def prometheus_scraping(target_url: str, folder: Path) -> Iterator[str]:
    """Prometheus on a free loopback port, scraping `target_url` every second; yields its base URL."""
    port = free_port()
    target = urllib.parse.urlsplit(target_url).netloc
    config = folder / "prometheus.yml"
    config.write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ["{ALERT_RULES}"]
scrape_configs:
  - job_name: speech-appliance
    static_configs:
      - targets: ["{target}"]
""")
    log = (folder / "prometheus.log").open("wb")
    process = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
                                f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)
        log.close()


def query(prometheus: str, expression: str) -> list[dict]:
    url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expression})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success"
    return body["data"]["result"]


def wait_for(prometheus: str, expression: str, accept: object, timeout_s: float = 30.0) -> list[dict]:
    """Polls the query until `accept(result)`; bounded by `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError):
            result = query(prometheus, expression)
            if accept(result):  # type: ignore[operator]
                return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"Prometheus did not answer {expression!r} as expected within {timeout_s} s")
        time.sleep(0.5)


async def test_a_real_prometheus_scrapes_the_daemon_and_computes_the_first_audio_p95(
        daemon: DaemonProcess, tmp_path: Path) -> None:
    p95 = "histogram_quantile(0.95, sum by (le) (rate(appliance_first_audio_seconds_bucket[1m])))"
    with prometheus_scraping(daemon.lan_url, tmp_path) as prometheus:
        up = await asyncio.to_thread(wait_for, prometheus, "up", lambda r: r and r[0]["value"][1] == "1")
        assert up[0]["metric"]["job"] == "speech-appliance"
        await asyncio.sleep(1.5)  # a scrape before the requests: the rate then sees them arrive
        client_first_audio = []
        for _ in range(3):
            status, first_s, _body, _seconds = await speak_http(daemon.lan_url, SENTENCE)
            assert status == 200
            client_first_audio.append(first_s)
        result = await asyncio.to_thread(
            wait_for, prometheus, p95, lambda r: r and math.isfinite(float(r[0]["value"][1])))
    quantile = float(result[0]["value"][1])
    # The p95 interpolates within the bucket that holds the slowest request, whose daemon-side wait was no
    # longer than the client's.
    ceiling = next(bound for bound in FIRST_AUDIO_BUCKETS_S if bound >= max(client_first_audio))
    assert 0 < quantile <= ceiling


# -- the alert rules ------------------------------------------------------------------------------------


def promtool_check_rules(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)


def test_the_shipped_alert_rules_pass_promtool_and_a_broken_rule_does_not(tmp_path: Path) -> None:
    shipped = promtool_check_rules(ALERT_RULES)
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    assert "SUCCESS: 6 rules found" in shipped.stdout
    broken = tmp_path / "broken.yml"
    broken.write_text(ALERT_RULES.read_text().replace("> 1.5", "> > 1.5", 1))
    result = promtool_check_rules(broken)
    assert result.returncode != 0
    assert "parse error" in (result.stdout + result.stderr)


def test_a_value_on_a_bucket_bound_counts_in_that_bucket_as_prometheus_le_says() -> None:
    histogram = FixedHistogram((0.5, 1.0))
    for seconds in (0.5, 0.7, 1.0, 3.0):
        histogram.observe(seconds)
    assert histogram.cumulative() == (1, 3)
    assert histogram.count == 4 and histogram.total == pytest.approx(5.2)
