"""The web page at `/`, used the way a person would: in a real (headless) Chromium, against a real appliance
on loopback, with the default voice and streamed Ogg Opus.

Needs Debian's `chromium` and `chromium-driver` packages and the `selenium` Python package; nothing is
downloaded (selenium-manager is bypassed by naming the driver and browser explicitly)."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from appliance.config import config_from_dict
from appliance.daemon import create_app
from appliance.status import StatusBoard
from appliance.synthesis.engine import SpeechEngine
from appliance.synthesis.loading import load_engine

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DEFAULT_VOICE = "en_US-joe-medium"
PLAYING_TIMEOUT = 30.0
SCREENSHOT = Path("/tmp/page.png")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)",
)

# What the page's audio element is doing, in one round trip.
PLAYER_STATE = """
const player = document.getElementById("player");
const status = document.getElementById("status");
return {status: status.textContent, statusClass: status.className, src: player.getAttribute("src"),
        currentTime: player.currentTime, paused: player.paused, readyState: player.readyState,
        networkState: player.networkState, error: player.error && player.error.code};
"""


@dataclass
class RunningAppliance:
    url: str
    engine: SpeechEngine
    requests: list[str] = field(default_factory=list)
    """Path and query of every request the appliance answered, in order."""

    def tts_requests(self) -> list[str]:
        return [r for r in self.requests if r.startswith("/api/tts")]


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAppliance]:
    """The daemon's app on 127.0.0.1, served from its own thread and event loop (selenium is synchronous)."""
    state = tmp_path_factory.mktemp("state")
    config = config_from_dict({"mdns": {"enabled": False}, "service": {"state_folder": str(state)}})
    engine = load_engine(config, StatusBoard())
    app = create_app(config, engine=engine)
    requests: list[str] = []

    async def note_request(request: web.Request, response: web.StreamResponse) -> None:
        requests.append(request.path_qs)

    async def start() -> web.AppRunner:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    app.on_response_prepare.append(note_request)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="appliance", daemon=True)
    thread.start()
    try:
        runner = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
        host, port = runner.addresses[0][:2]
        yield RunningAppliance(f"http://{host}:{port}/", engine, requests)
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        engine.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile.name}",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1000,800",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        profile.cleanup()


@pytest.fixture
def page(appliance: RunningAppliance, browser: webdriver.Chrome) -> webdriver.Chrome:
    """The page freshly opened (the previous one, and any stream it held, gone) with its voice list loaded."""
    browser.get(appliance.url)
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#voice option"))
    WebDriverWait(browser, 10, poll_frequency=0.1).until(lambda _: appliance.engine.counters.active_streams == 0)
    return browser


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """SEVERE console entries since the last call (reading the log empties it)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def player_state(driver: webdriver.Chrome) -> dict:
    return driver.execute_script(PLAYER_STATE)


def wait_until_playing(driver: webdriver.Chrome) -> dict:
    """Audio is really coming out: the page says so, and the element has played some of it."""
    last: dict = {}

    def playing(d: webdriver.Chrome) -> bool:
        nonlocal last
        last = player_state(d)
        if last["statusClass"] == "error":
            raise AssertionError(f"the page reported an error instead of playing: {last}")
        return (
            last["status"].startswith("Playing")
            and last["currentTime"] > 0
            and not last["paused"]
            and last["readyState"] >= 2
        )

    try:
        WebDriverWait(driver, PLAYING_TIMEOUT, poll_frequency=0.1).until(playing)
    except Exception as e:
        raise AssertionError(f"audio did not start playing within {PLAYING_TIMEOUT} s; last state {last}") from e
    return last


def test_speaking_a_sentence_plays_streamed_audio(appliance: RunningAppliance, page: webdriver.Chrome) -> None:
    voice = Select(page.find_element(By.ID, "voice"))
    assert DEFAULT_VOICE in [o.get_attribute("value") for o in voice.options]
    assert voice.first_selected_option.get_attribute("value") == DEFAULT_VOICE
    assert Select(page.find_element(By.ID, "format")).first_selected_option.get_attribute("value") == "opus"

    text = page.find_element(By.ID, "text")
    text.clear()
    text.send_keys("The kettle is on, and the tea will be ready in five minutes.")
    page.find_element(By.ID, "speak").click()

    state = wait_until_playing(page)
    page.save_screenshot(str(SCREENSHOT))
    assert state["error"] is None
    assert [r for r in appliance.tts_requests() if "kettle" in r], appliance.requests
    assert "format=opus" in appliance.tts_requests()[-1]
    assert console_errors(page) == []


def test_whitespace_only_text_is_refused_on_the_page(appliance: RunningAppliance, page: webdriver.Chrome) -> None:
    asked_before = len(appliance.tts_requests())
    text = page.find_element(By.ID, "text")
    text.clear()
    text.send_keys("   \n\t  ")
    page.find_element(By.ID, "speak").click()

    state = player_state(page)
    assert state["statusClass"] == "error"
    assert state["status"] == "Type some text first."
    assert state["src"] is None and state["networkState"] == 0  # NETWORK_EMPTY: the element fetched nothing
    assert len(appliance.tts_requests()) == asked_before
    assert console_errors(page) == []


def test_a_refused_request_shows_the_appliances_reason(appliance: RunningAppliance, page: webdriver.Chrome) -> None:
    # A voice offered when the page loaded but gone by the time Speak is pressed.
    page.execute_script(
        "document.getElementById('voice').add(new Option('en_US-gone-medium', 'en_US-gone-medium', true, true));"
    )
    page.find_element(By.ID, "speak").click()

    WebDriverWait(page, 10, poll_frequency=0.1).until(lambda d: player_state(d)["statusClass"] == "error")
    assert player_state(page)["status"] == "unknown voice 'en_US-gone-medium'; see /api/voices"
    # The browser reports the refused audio request and the page's follow-up; nothing else went wrong.
    errors = console_errors(page)
    assert errors and all("/api/tts?" in e and "404 (Not Found)" in e for e in errors), errors


def test_stop_silences_the_player_and_ends_synthesis(appliance: RunningAppliance, page: webdriver.Chrome) -> None:
    # Long enough that the appliance is still synthesising when Stop is pressed.
    sentences = [f"This is sentence number {n} of a long story that nobody will hear the end of." for n in range(40)]
    page.execute_script("document.getElementById('text').value = arguments[0];", " ".join(sentences))
    cancelled_before = appliance.engine.counters.cancelled
    page.find_element(By.ID, "speak").click()
    wait_until_playing(page)
    assert appliance.engine.counters.active_streams == 1, "synthesis finished before Stop: make the text longer"

    page.find_element(By.ID, "stop").click()
    state = player_state(page)
    assert state["status"] == "Stopped."
    assert state["paused"] and state["src"] is None
    WebDriverWait(page, 10, poll_frequency=0.1).until(lambda _: appliance.engine.counters.active_streams == 0)
    assert appliance.engine.counters.cancelled == cancelled_before + 1
    assert player_state(page)["status"] == "Stopped."  # no late error from the aborted stream
    assert console_errors(page) == []
