"""The order panel notebook as a Voila page, driven by Debian's Chromium (headless) through Playwright.

Serves ``notebooks/40_order_panel.ipynb`` with Voila on 127.0.0.1 (a free port, the test's own
data folders), then: search a symbol, place a paper limit order by clicking, see it in the
orders table, cancel it, place a GTT, and save a screenshot into the test's tmp folder.

Needs the system browser: ``apt-get install -y chromium chromium-driver`` (``.ci/run`` does it).
Without it the test fails and says so; it never downloads a browser of its own.
"""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "40_order_panel.ipynb"
CHROMIUM = Path(os.environ.get("TRADEFLOW_CHROMIUM", "/usr/bin/chromium"))
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no name lookups: the page has only loopback
]
RENDER_TIMEOUT_MS = 60_000  # a Voila kernel starts, imports tradeflow and runs the notebook: ~5-10 s here
STEP_TIMEOUT_MS = 20_000

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"voila exited with code {proc.returncode} before serving:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"voila did not listen on 127.0.0.1:{port} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


class VoilaServer:
    """Voila serving the notebook on a free loopback port, in its own process group (ours to stop)."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = tmp_path / "voila.log"
        env = dict(os.environ)  # conftest's tmp TRADEFLOW_DATA_DIR / TRADEFLOW_STORE_ROOT, no live arming
        env.pop("TRADEFLOW_ALLOW_LIVE", None)
        env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "jupyter-runtime")
        cmd = [sys.executable, "-m", "voila", str(NOTEBOOK), "--no-browser", f"--port={self.port}",
               "--Voila.ip=127.0.0.1", "--show_tracebacks=True"]
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def tail(self) -> str:
        return self.log.read_text()[-3000:]

    def stop(self) -> None:
        """SIGTERM (voila shuts its kernels down), then SIGKILL whatever of the group is left."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=5)


@pytest.fixture
def voila(tmp_path):
    try:
        import voila  # noqa: F401
    except ImportError:
        pytest.fail("voila is not installed: pip install -e '.[dev]' (it is a dependency of tradeflow)")
    server = VoilaServer(tmp_path)
    try:
        _wait_for_port(server.port, server.proc, server.log)
        yield server
    finally:
        server.stop()


def _price(text: str) -> float:
    m = re.search(r"LTP ([\d,]+\.\d+)", text)
    assert m, f"no last price shown: {text!r}"
    return float(m.group(1).replace(",", ""))


def _ticks_below(price: float, fraction: float, tick: float = 0.05) -> str:
    return f"{math.floor(price * (1 - fraction) / tick) * tick:.2f}"


def test_order_panel_in_a_real_browser(voila, tmp_path, capsys):
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's browser with "
                    "`sudo apt-get install -y chromium chromium-driver` (or set TRADEFLOW_CHROMIUM to its path)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]' (the system Chromium is used; "
                    "never run `playwright install`)")
    url, log = voila.url, voila.log
    shot = tmp_path / "order_panel.png"
    started = time.monotonic()
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=FLAGS,
            viewport={"width": 1400, "height": 2200},  # Voila scrolls inside the page: a tall window shows it all
        )
        try:
            blocked: list[str] = []

            def loopback_only(route) -> None:
                # like conftest's socket guard: the page may load only what voila serves on 127.0.0.1
                if route.request.url.startswith(("http://127.0.0.1:", "ws://127.0.0.1:")):
                    route.continue_()
                else:
                    blocked.append(route.request.url)
                    route.abort()

            ctx.route("**/*", loopback_only)
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.set_default_timeout(STEP_TIMEOUT_MS)
            expect.set_options(timeout=STEP_TIMEOUT_MS)
            page.goto(url, wait_until="domcontentloaded")
            try:
                page.wait_for_selector(".tf-order-search input", timeout=RENDER_TIMEOUT_MS)
            except Exception:
                body = page.inner_text("body")[-2000:]
                pytest.fail(f"the order panel did not render:\n{body}\nvoila log:\n{log.read_text()[-3000:]}")
            expect(page.locator(".tf-order-banner")).to_contain_text("PAPER")
            rendered = time.monotonic() - started

            # search a symbol and pick it from the suggestions
            search = page.locator(".tf-order-search input")
            search.fill("")
            search.press_sequentially("INF", delay=50)
            options = page.locator(".tf-order-suggestions select option")
            expect(options.filter(has_text="INFY · NSE_EQ")).to_have_count(1)
            page.locator(".tf-order-suggestions select").select_option(label=options.filter(has_text="INFY").first.inner_text())
            expect(page.locator(".tf-order-chosen")).to_contain_text("INFY · NSE_EQ · EQUITY · lot 1")
            expect(page.locator(".tf-order-ltp")).to_contain_text("INFY LTP")
            price = _ticks_below(_price(page.locator(".tf-order-ltp").inner_text()), 0.05)

            # a paper BUY LIMIT below the market, placed by clicking: it rests in the open orders
            page.locator(".tf-order-side button", has_text="BUY").click()
            page.locator(".tf-order-type button", has_text="LIMIT").click()
            page.locator(".tf-order-qty input").fill("2")
            page.locator(".tf-order-price input").fill(price)
            page.locator(".tf-order-price input").press("Tab")
            expect(page.locator(".tf-order-problems")).to_contain_text("ready: BUY 2 INFY")
            expect(page.locator(".tf-order-review")).to_be_enabled()
            page.locator(".tf-order-review").click()
            expect(page.locator(".tf-order-confirm-box")).to_contain_text("estimated charges")
            page.locator(".tf-order-confirm").click()
            row = page.locator(".tf-open-orders .tf-row-P000001")
            expect(row).to_contain_text("INFY")
            expect(row).to_contain_text("OPEN")
            expect(page.locator(".tf-order-status")).to_contain_text("P000001: PENDING → OPEN")

            # cancel it from its row
            row.locator(".tf-row-cancel").click()
            expect(page.locator(".tf-done-orders .tf-row-P000001")).to_contain_text("CANCELLED")
            expect(page.locator(".tf-open-orders .tf-row")).to_have_count(0)

            # a single-trigger GTT on the preselected symbol: buy the dip
            expect(page.locator(".tf-gtt-ltp")).to_contain_text("RELIANCE LTP")
            trigger = _ticks_below(_price(page.locator(".tf-gtt-ltp").inner_text()), 0.10)
            page.locator(".tf-gtt-side button", has_text="BUY").click()
            page.locator(".tf-gtt-trigger input").fill(trigger)
            page.locator(".tf-gtt-trigger input").press("Tab")
            expect(page.locator(".tf-gtt-legs")).to_contain_text(f"falls to {float(trigger):,.2f} or below")
            expect(page.locator(".tf-gtt-review")).to_be_enabled()
            page.locator(".tf-gtt-review").click()
            page.locator(".tf-gtt-confirm").click()
            gtt_row = page.locator(".tf-gtts .tf-row-G000001")
            expect(gtt_row).to_contain_text("RELIANCE")
            expect(gtt_row).to_contain_text("ACTIVE")
            expect(page.locator(".tf-gtt-message")).to_contain_text("GTT G000001 placed at paper")

            page.screenshot(path=str(shot), full_page=True)
        finally:
            ctx.close()
    took = time.monotonic() - started
    with capsys.disabled():
        print(f"\nbrowser test: page rendered in {rendered:.1f} s, whole run {took:.1f} s; screenshot: {shot}"
              + (f"; blocked {len(blocked)} non-loopback request(s), e.g. {blocked[0]}" if blocked else ""))
    assert shot.stat().st_size > 10_000
    voila.stop()

    # what the page did is in the test's own paper account (read once voila has let it go)
    from tradeflow.brokers.paper import PaperBroker
    from tradeflow.config import settings

    for _ in range(50):
        try:
            broker = PaperBroker(db_path=settings().data_dir / "paper" / "paper.duckdb")
            break
        except Exception:  # noqa: BLE001 - the kernel may still be closing the file
            time.sleep(0.2)
    else:
        pytest.fail("the paper account stayed locked after voila stopped")
    with broker:
        (order,) = broker.orders()
        assert (order.request.instrument.symbol, order.request.quantity, order.status.value) == ("INFY", 2, "CANCELLED")
        assert f"{order.request.price:.2f}" == price
        (gtt,) = broker.gtts()
        assert (gtt.request.instrument.symbol, gtt.status, f"{gtt.request.legs[0].trigger_price:.2f}") == (
            "RELIANCE", "ACTIVE", trigger)
