"""The web page at `/`, used the way a person would: in a real (headless) Chromium, against a real appliance
on loopback, with the default voice. The page speaks over the WebSocket `/ws/tts` and plays the PCM frames
with Web Audio as they arrive; the tests read what it plays from its `window.player` view.

Needs Debian's `chromium` and `chromium-driver` packages and the `selenium` Python package; nothing is
downloaded (selenium-manager is bypassed by naming the driver and browser explicitly)."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from appliance.config import config_from_dict
from appliance.daemon import create_app
from appliance.synthesis.engine import SpeechEngine
from appliance.synthesis.loading import load_engine

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DEFAULT_VOICE = "en_US-joe-medium"
PLAYING_TIMEOUT = 30.0
"""Click to audio on a busy 2-core box; in practice well under a second."""
SYNTHESIS_TIMEOUT = 300.0
"""For a whole long text to be synthesised on that box."""
SCREENSHOT = Path("/tmp/page.png")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)",
)

# What the page shows and plays, in one round trip (spreading `window.player` reads its getters).
PLAYER_STATE = """
const status = document.getElementById("status");
return {status: status.textContent, statusClass: status.className, ...window.player};
"""

# Records every message the page sends over any WebSocket, without changing what it sends.
SPY_ON_WEBSOCKETS = """
window.sentMessages = [];
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) { window.sentMessages.push(data); return send.call(this, data); };
"""


@dataclass
class RunningAppliance:
    url: str
    engine: SpeechEngine


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAppliance]:
    """The daemon's app on 127.0.0.1, served from its own thread and event loop (selenium is synchronous)."""
    state = tmp_path_factory.mktemp("state")
    config = config_from_dict({"mdns": {"enabled": False}, "wyoming": {"enabled": False},
                               "service": {"state_folder": str(state)}})
    engine = load_engine(config)
    app = create_app(config, engine=engine)

    async def start() -> web.AppRunner:
        runner = web.AppRunner(app, shutdown_timeout=2.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="appliance", daemon=True)
    thread.start()
    try:
        runner = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
        host, port = runner.addresses[0][:2]
        yield RunningAppliance(f"http://{host}:{port}/", engine)
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
def page(appliance: RunningAppliance, browser: webdriver.Chrome) -> Iterator[webdriver.Chrome]:
    """The page freshly opened (the previous one, its socket and any stream it held, gone) with its voice list
    loaded and its WebSocket spied on."""
    browser.get(appliance.url)
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#voice option"))
    WebDriverWait(browser, 30, poll_frequency=0.1).until(lambda _: appliance.engine.counters.active_streams == 0)
    browser.execute_script(SPY_ON_WEBSOCKETS)
    console_errors(browser)  # start each test with an empty console log
    yield browser
    browser.execute_script("document.getElementById('stop').click();")  # nothing keeps playing into the next


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """SEVERE console entries since the last call (reading the log empties it)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def player_state(driver: webdriver.Chrome) -> dict:
    return driver.execute_script(PLAYER_STATE)


def sent_messages(driver: webdriver.Chrome) -> list[str]:
    return driver.execute_script("return window.sentMessages;")


def speak(driver: webdriver.Chrome, text: str) -> None:
    driver.execute_script("document.getElementById('text').value = arguments[0];", text)
    driver.find_element(By.ID, "speak").click()


def wait_for(driver: webdriver.Chrome, what: str, condition: Callable[[dict], bool], timeout: float) -> dict:
    """Polls the page's state until `condition` holds; an error on the page fails at once."""
    last: dict = {}

    def holds(d: webdriver.Chrome) -> bool:
        nonlocal last
        last = player_state(d)
        if last["statusClass"] == "error":
            raise AssertionError(f"the page reported an error instead of {what}: {last}")
        return condition(last)

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.1).until(holds)
    except AssertionError:
        raise
    except Exception as e:
        raise AssertionError(f"{what} did not happen within {timeout} s; last state {last}") from e
    return last


def wait_until_playing(driver: webdriver.Chrome) -> dict:
    """Audio is really coming out: the page says so, has scheduled some, and its audio clock is running."""
    state = wait_for(driver, "playing", lambda s: s["status"].startswith("Playing") and s["scheduledSeconds"] > 0,
                     PLAYING_TIMEOUT)
    assert state["playing"] and state["contextState"] == "running", state
    started_at = state["contextTime"]
    wait_for(driver, "the audio clock advancing", lambda s: s["contextTime"] > started_at + 0.1, 10)
    return state


def sentences(count: int) -> str:
    return " ".join(f"This is sentence number {n} of a long story that nobody will hear the end of."
                    for n in range(count))


def test_speaking_a_sentence_plays_it_and_then_says_done(page: webdriver.Chrome) -> None:
    voice = Select(page.find_element(By.ID, "voice"))
    assert DEFAULT_VOICE in [o.get_attribute("value") for o in voice.options]
    assert voice.first_selected_option.get_attribute("value") == DEFAULT_VOICE

    text = page.find_element(By.ID, "text")
    text.clear()
    text.send_keys("The kettle is on, and the tea will be ready in five minutes.")
    page.find_element(By.ID, "speak").click()

    state = wait_until_playing(page)
    page.save_screenshot(str(SCREENSHOT))
    assert state["status"] == f"Playing; audio started {state['startedMs']} ms after the click."
    [message] = sent_messages(page)
    assert '"type":"speak"' in message and '"format":"pcm"' in message and "kettle" in message

    done = wait_for(page, "the end of playback", lambda s: s["status"] == "Done.", SYNTHESIS_TIMEOUT)
    assert not done["playing"] and done["queuedBuffers"] == 0
    assert done["end"]["audio_seconds"] == pytest.approx(done["scheduledSeconds"], abs=0.01)
    assert console_errors(page) == []


def test_playback_starts_while_the_appliance_is_still_synthesising(
    appliance: RunningAppliance, page: webdriver.Chrome
) -> None:
    speak(page, sentences(20))
    playing = wait_until_playing(page)
    assert appliance.engine.counters.active_streams == 1, "synthesis finished before playback started"

    done = wait_for(page, "the end of synthesis", lambda s: s["end"] is not None, SYNTHESIS_TIMEOUT)
    print(f"click to first audio {playing['startedMs']} ms; synthesis {done['end']['synthesis_ms']} ms "
          f"for {done['end']['audio_seconds']} s of audio")
    assert playing["startedMs"] < done["end"]["synthesis_ms"], done["end"]
    assert done["playing"] and done["status"] == playing["status"]  # still playing what was made
    assert console_errors(page) == []


def test_whitespace_only_text_is_refused_without_asking_the_appliance(page: webdriver.Chrome) -> None:
    text = page.find_element(By.ID, "text")
    text.clear()
    text.send_keys("   \n\t  ")
    page.find_element(By.ID, "speak").click()

    state = player_state(page)
    assert state["statusClass"] == "error"
    assert state["status"] == "Type some text first."
    assert not state["playing"] and state["scheduledSeconds"] == 0
    assert sent_messages(page) == []
    assert console_errors(page) == []


def test_a_refused_request_shows_the_appliances_reason(page: webdriver.Chrome) -> None:
    # A voice offered when the page loaded but gone by the time Speak is pressed.
    page.execute_script(
        "document.getElementById('voice').add(new Option('en_US-gone-medium', 'en_US-gone-medium', true, true));"
    )
    page.find_element(By.ID, "speak").click()

    WebDriverWait(page, 10, poll_frequency=0.1).until(lambda d: player_state(d)["statusClass"] == "error")
    state = player_state(page)
    assert state["status"] == "unknown voice 'en_US-gone-medium'; see /api/voices"
    assert not state["playing"] and state["scheduledSeconds"] == 0
    assert console_errors(page) == []


def test_stop_silences_the_page_and_cancels_synthesis(appliance: RunningAppliance, page: webdriver.Chrome) -> None:
    # Long enough that the appliance is still synthesising when Stop is pressed.
    cancelled_before = appliance.engine.counters.cancelled
    speak(page, sentences(40))
    wait_until_playing(page)
    assert appliance.engine.counters.active_streams == 1, "synthesis finished before Stop: make the text longer"

    page.find_element(By.ID, "stop").click()
    state = player_state(page)
    assert state["status"] == "Stopped."
    assert not state["playing"] and state["queuedBuffers"] == 0
    assert sent_messages(page)[-1] == '{"type":"cancel"}'
    WebDriverWait(page, 10, poll_frequency=0.1).until(lambda _: appliance.engine.counters.active_streams == 0)
    assert appliance.engine.counters.cancelled == cancelled_before + 1

    time.sleep(0.5)  # frames already on their way when Stop was pressed must not be played
    late = player_state(page)
    assert late["status"] == "Stopped." and late["scheduledSeconds"] == state["scheduledSeconds"]
    assert late["queuedBuffers"] == 0
    assert console_errors(page) == []


def test_the_page_connects_again_after_losing_its_websocket(page: webdriver.Chrome) -> None:
    page.execute_script("socket.close();")
    WebDriverWait(page, 10, poll_frequency=0.1).until(lambda d: d.execute_script("return socket.readyState;") == 3)
    speak(page, "Still here after a hiccup.")
    wait_until_playing(page)
    assert page.execute_script("return socket.readyState;") == 1
    assert console_errors(page) == []


def test_a_text_longer_than_a_url_can_carry_is_spoken(appliance: RunningAppliance, page: webdriver.Chrome) -> None:
    text = sentences(200)[:9000]
    assert len(text) == 9000  # beyond aiohttp's 8190-byte request line, within the appliance's 10,000 limit
    speak(page, text)
    wait_until_playing(page)
    assert appliance.engine.counters.active_streams == 1
    assert console_errors(page) == []


def test_a_text_over_the_limit_shows_the_appliances_reason(page: webdriver.Chrome) -> None:
    speak(page, "a" * 10_001)

    WebDriverWait(page, 10, poll_frequency=0.1).until(lambda d: player_state(d)["statusClass"] == "error")
    assert player_state(page)["status"] == "text has 10001 characters; the limit is 10000"
    assert console_errors(page) == []


def test_download_hands_over_an_ogg_opus_file(page: webdriver.Chrome) -> None:
    # Catch the download link's click instead of letting the browser save the file.
    page.execute_script("""
        window.downloads = [];
        HTMLAnchorElement.prototype.click = function () { window.downloads.push([this.download, this.href]); };
    """)
    speak_text = "Save this for later."
    page.execute_script("document.getElementById('text').value = arguments[0];", speak_text)
    page.find_element(By.ID, "download").click()

    wait_for(page, "the download", lambda s: s["status"] == "Downloaded speech.opus.", SYNTHESIS_TIMEOUT)
    [[name, url]] = page.execute_script("return window.downloads;")
    assert name == "speech.opus"
    head, size = page.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch(arguments[0]).then((r) => r.arrayBuffer())
            .then((b) => done([String.fromCharCode(...new Uint8Array(b, 0, 4)), b.byteLength]));""",
        url,
    )
    assert head == "OggS" and size > 1000
    assert sent_messages(page) == []  # made over HTTP, not spoken
    assert console_errors(page) == []


def test_pcm_frames_split_inside_a_sample_decode_to_the_same_audio(page: webdriver.Chrome) -> None:
    samples = [0, 1, -1, 32767, -32768, 256, -257, 12345]
    data = b"".join(s.to_bytes(2, "little", signed=True) for s in samples)
    frames = [data[:3], data[3:4], data[4:9], data[9:]]  # odd, odd, odd and even lengths
    decoded = page.execute_script(
        """let leftover = null, out = [];
        for (const frame of arguments[0]) {
            const [floats, rest] = pcmToFloat32(leftover, new Uint8Array(frame).buffer);
            out.push(...floats);
            leftover = rest;
        }
        return [out, leftover];""",
        [list(frame) for frame in frames],
    )
    assert decoded == [[s / 32768 for s in samples], None]
