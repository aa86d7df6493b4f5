"""Notifiers: the log, Telegram over a local fake Bot API, and the choice from the environment."""

from __future__ import annotations

import json
import logging

import pytest
from pydantic import SecretStr
from pytest_httpserver import HTTPServer
from werkzeug import Response

from tradeflow import notify
from tradeflow.errors import ConfigError
from tradeflow.notify import BackgroundNotifier, LogNotifier, Notifier, TelegramNotifier, notifier_from_env

TOKEN = "123456789:AAH-sEcReT_t0ken-value"
PATH = f"/bot{TOKEN}/sendMessage"
OK = {"ok": True, "result": {"message_id": 1}}


@pytest.fixture
def server():
    s = HTTPServer(host="127.0.0.1", port=0)
    s.start()
    yield s
    s.clear()
    s.stop()


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    """No real waiting, no keyring, no Telegram variables from the developer's environment."""
    waits: list[float] = []
    monkeypatch.setattr(notify, "_sleep", waits.append)
    import keyring

    monkeypatch.setattr(keyring, "get_password", lambda service, name: None)
    for name in ("TRADEFLOW_TELEGRAM_BOT_TOKEN", "TRADEFLOW_TELEGRAM_CHAT_ID", "TRADEFLOW_TELEGRAM_URL"):
        monkeypatch.delenv(name, raising=False)
    return waits


@pytest.fixture
def waits(_quiet):
    return _quiet


def tg(server: HTTPServer, **kw) -> TelegramNotifier:
    return TelegramNotifier(SecretStr(TOKEN), "42", base_url=server.url_for("/").rstrip("/"), **kw)


def client_logs(caplog) -> str:
    """Everything logged in the process except the fake server's own access log (werkzeug)."""
    return "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records if not r.name.startswith("werkzeug"))


def bodies(server: HTTPServer) -> list[dict]:
    return [json.loads(req.get_data()) for req, _ in server.log]


def test_log_notifier_logs_event_and_text_at_the_level(caplog):
    n = LogNotifier()
    assert isinstance(n, Notifier)
    with caplog.at_level(logging.DEBUG, logger="tradeflow.notify"):
        n.send("start", "run1 started")
        n.send("kill", "run1: kill switch", level="warning")
        n.send("error", "boom", level="critical")
        n.send("fill", "odd level", level="loud")  # an unknown level is INFO, never an error
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "start: run1 started"), (logging.WARNING, "kill: run1: kill switch"),
        (logging.CRITICAL, "error: boom"), (logging.INFO, "fill: odd level"),
    ]


def test_telegram_posts_the_exact_request_and_logs(server, caplog):
    server.expect_oneshot_request(PATH, method="POST", json={"chat_id": "42", "text": "BUY 50 NIFTY at 24,010.05"}) \
        .respond_with_json(OK)
    n = tg(server)
    assert isinstance(n, Notifier)
    with caplog.at_level(logging.DEBUG):
        n.send("fill", "BUY 50 NIFTY at 24,010.05")
    server.check_assertions()
    (req, _), = server.log
    assert req.headers["Content-Type"] == "application/json"
    assert "fill: BUY 50 NIFTY at 24,010.05" in caplog.text
    logs = client_logs(caplog)
    assert "urllib3" in logs and "/bot<redacted>/sendMessage" in logs  # urllib3's request line, redacted
    assert TOKEN not in logs and "sEcReT" not in logs
    assert TOKEN not in repr(n)
    n.close()


def test_429_waits_retry_after_then_retries_once(server, waits, caplog):
    server.expect_ordered_request(PATH, method="POST").respond_with_json(
        {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 3",
         "parameters": {"retry_after": 3}}, status=429)
    server.expect_ordered_request(PATH, method="POST").respond_with_json(OK)
    with caplog.at_level(logging.INFO, logger="tradeflow.notify"):
        tg(server, min_interval=0).send("summary", "day done")
    server.check_assertions()
    assert len(server.log) == 2 and waits == [3.0]
    assert bodies(server) == [{"chat_id": "42", "text": "day done"}] * 2
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_429_longer_than_the_cap_is_not_waited_out(server, waits, caplog):
    server.expect_request(PATH, method="POST").respond_with_json(
        {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 60",
         "parameters": {"retry_after": 60}}, status=429)
    with caplog.at_level(logging.WARNING, logger="tradeflow.notify"):
        tg(server, max_retry_after=5).send("fill", "x")
    assert len(server.log) == 1 and waits == []
    assert "not delivered" in caplog.text and "wait 60 s" in caplog.text


def test_429_a_second_time_gives_up(server, waits, caplog):
    server.expect_request(PATH, method="POST").respond_with_response(
        Response("{}", status=429, headers={"Retry-After": "2"}, content_type="application/json"))
    with caplog.at_level(logging.WARNING, logger="tradeflow.notify"):
        tg(server).send("fill", "x")
    assert len(server.log) == 2 and waits == [2.0]  # the header is used when the JSON has no retry_after
    assert "HTTP 429" in caplog.text


def test_server_error_is_logged_not_raised_and_not_retried(server, caplog):
    server.expect_request(PATH, method="POST").respond_with_json(
        {"ok": False, "error_code": 500, "description": "Internal Server Error"}, status=500)
    with caplog.at_level(logging.DEBUG):
        tg(server).send("error", "engine stopped", level="error")  # must not raise
    assert len(server.log) == 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "tradeflow.notify" and r.levelno == logging.WARNING]
    assert warnings == ["telegram: the 'error' message was not delivered: HTTP 500 Internal Server Error"]
    assert TOKEN not in client_logs(caplog)


def test_bad_request_from_telegram_is_logged(server, caplog):
    server.expect_request(PATH, method="POST").respond_with_json(
        {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}, status=400)
    with caplog.at_level(logging.WARNING, logger="tradeflow.notify"):
        tg(server).send("start", "hello")
    assert "HTTP 400 Bad Request: chat not found" in caplog.text


def test_network_error_retries_once_and_never_shows_the_token(waits, caplog):
    n = TelegramNotifier(TOKEN, "42", base_url="http://127.0.0.1:9", timeout=2.0)  # nothing listens there
    with caplog.at_level(logging.DEBUG):
        n.send("fill", "x")
        n.send("fill", "y")
    warnings = [r for r in caplog.records if r.name == "tradeflow.notify" and r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "ConnectionError" in warnings[0].getMessage()
    assert "/bot<redacted>/sendMessage" in caplog.text  # the URL is in requests' message, minus the token
    assert TOKEN not in caplog.text and "sEcReT" not in caplog.text
    assert waits and all(0 < w <= 1.0 for w in waits)  # the retries were paced by min_interval


def test_any_failure_of_the_session_is_swallowed_and_redacted(caplog):
    class Broken:
        def post(self, url, **kw):
            raise RuntimeError(f"cannot reach {url}")

    n = TelegramNotifier(TOKEN, "42", session=Broken())
    with caplog.at_level(logging.WARNING, logger="tradeflow.notify"):
        n.send("fill", "x")
    assert "unexpected RuntimeError: cannot reach https://api.telegram.org/bot<redacted>/sendMessage" in caplog.text
    assert TOKEN not in caplog.text


def test_min_interval_spaces_messages(server, waits, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(notify, "_monotonic", lambda: now[0])
    server.expect_request(PATH, method="POST").respond_with_json(OK)
    n = tg(server, min_interval=1.0)
    n.send("fill", "a")
    now[0] += 0.25
    n.send("fill", "b")
    now[0] += 5.0
    n.send("fill", "c")
    assert waits == [pytest.approx(0.75)] and len(server.log) == 3


def test_long_texts_are_cut_to_telegrams_limit(server):
    server.expect_request(PATH, method="POST").respond_with_json(OK)
    n = tg(server, min_interval=0)
    n.send("summary", "x" * 5000)
    n.send("summary", "y" * 4096)  # exactly the limit: untouched
    n.send("summary", "😀" * 3000)  # two UTF-16 units each, as Telegram counts
    long, exact, emoji = (b["text"] for b in bodies(server))
    assert len(long) == 4096 and long.endswith("…") and long[:4095] == "x" * 4095
    assert exact == "y" * 4096
    assert emoji == "😀" * 2047 + "…" and len(emoji.encode("utf-16-le")) // 2 == 4095


def test_constructor_checks_and_never_echoes_the_token():
    with pytest.raises(ConfigError, match="bot token is empty"):
        TelegramNotifier("  ", "42")
    with pytest.raises(ConfigError, match="chat id is empty"):
        TelegramNotifier(TOKEN, "")
    with pytest.raises(ConfigError, match="spaces or URL characters") as bad:
        TelegramNotifier(TOKEN + "/x y", "42")
    assert TOKEN not in str(bad.value)
    with pytest.raises(ConfigError, match="plain http") as clear:
        TelegramNotifier(TOKEN, "42", base_url="http://api.telegram.org")
    assert TOKEN not in str(clear.value)


# ---------------------------------------------------------------------- from the environment


def test_neither_variable_means_the_log():
    assert isinstance(notifier_from_env(), LogNotifier)


def test_both_variables_mean_telegram_which_reaches_the_url(server, monkeypatch, caplog):
    monkeypatch.setenv("TRADEFLOW_TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TRADEFLOW_TELEGRAM_CHAT_ID", "-100123")
    monkeypatch.setenv("TRADEFLOW_TELEGRAM_URL", server.url_for("/").rstrip("/"))
    server.expect_request(PATH, method="POST", json={"chat_id": "-100123", "text": "run1 started"}).respond_with_json(OK)
    n = notifier_from_env()
    # Telegram is sent from a background thread: the trading loop never waits for the network
    assert isinstance(n, BackgroundNotifier) and isinstance(n.inner, TelegramNotifier) and n.inner.chat_id == "-100123"
    with caplog.at_level(logging.INFO, logger="tradeflow.notify"):
        n.send("start", "run1 started")
        n.close()  # waits for the queued message
    server.check_assertions()
    assert len(server.log) == 1 and "start: run1 started" in caplog.text


def test_default_url_is_telegrams(monkeypatch):
    monkeypatch.setenv("TRADEFLOW_TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TRADEFLOW_TELEGRAM_CHAT_ID", "42")
    assert notifier_from_env().inner.base_url == "https://api.telegram.org"


@pytest.mark.parametrize(("given", "missing"), [
    ("TRADEFLOW_TELEGRAM_BOT_TOKEN", "TRADEFLOW_TELEGRAM_CHAT_ID"),
    ("TRADEFLOW_TELEGRAM_CHAT_ID", "TRADEFLOW_TELEGRAM_BOT_TOKEN"),
])
def test_only_one_variable_is_a_config_error_naming_the_other(monkeypatch, given, missing):
    monkeypatch.setenv(given, TOKEN if given.endswith("TOKEN") else "42")
    with pytest.raises(ConfigError, match=f"{given} is set but {missing} is not") as err:
        notifier_from_env()
    assert TOKEN not in str(err.value)


def test_dotenv_and_keyring_are_read(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text(f"TRADEFLOW_TELEGRAM_BOT_TOKEN={TOKEN}\nTRADEFLOW_TELEGRAM_CHAT_ID=7\n")
    n = notifier_from_env()  # the tests run in tmp_path
    assert isinstance(n.inner, TelegramNotifier) and n.inner.chat_id == "7"
    (tmp_path / ".env").write_text("TRADEFLOW_TELEGRAM_CHAT_ID=7\n")
    import keyring

    monkeypatch.setattr(keyring, "get_password",
                        lambda service, name: TOKEN if (service, name) == ("tradeflow", "TRADEFLOW_TELEGRAM_BOT_TOKEN") else None)
    assert isinstance(notifier_from_env().inner, TelegramNotifier)
    (tmp_path / ".env").write_text("TRADEFLOW_TELEGRAM_CHAT_ID=\n")  # empty counts as unset
    with pytest.raises(ConfigError, match="TRADEFLOW_TELEGRAM_BOT_TOKEN is set but TRADEFLOW_TELEGRAM_CHAT_ID is not"):
        notifier_from_env()


def test_background_notifier_keeps_order_and_never_blocks_or_raises():
    import time as _time

    seen = []

    class Slow:
        def send(self, event, text, *, level="info"):
            _time.sleep(0.05)
            if event == "error":
                raise RuntimeError("network down")
            seen.append((event, text))

    n = BackgroundNotifier(Slow())
    t = _time.perf_counter()
    for i in range(5):
        n.send("fill", f"f{i}")
    n.send("error", "boom", level="error")
    n.send("stop", "bye")
    assert _time.perf_counter() - t < 0.05  # the caller did not wait for the slow sends
    n.close()
    assert seen == [("fill", f"f{i}") for i in range(5)] + [("stop", "bye")]
