"""Notifications from the trading engine: start, stop, fills, errors, kills, the daily summary.

The engine talks to a :class:`Notifier` (one method, ``send``) and never learns how the
message travels::

    >>> notifier = notifier_from_env()          # Telegram when configured, else the log
    >>> notifier.send("fill", "BUY 50 NIFTY24DECFUT at 24,010.05 (run1-b12-e)")
    >>> notifier.send("error", "broker session expired", level="error")

Sending never raises into the trading loop: a failure (network down, Telegram refusing,
a bad chat id) is logged, without the bot token, and swallowed.

* :class:`LogNotifier` (the default) logs ``"<event>: <text>"`` on the ``tradeflow.notify``
  logger at the message's level.
* :class:`TelegramNotifier` logs the same way, then posts the text to a Telegram chat through
  the Bot API (``POST {base_url}/bot<token>/sendMessage``, JSON ``{"chat_id", "text"}``). It
  waits ``min_interval`` seconds between messages (Telegram allows about one a second per
  chat), retries once after a network error or an HTTP 429 (after Telegram's
  ``retry_after``, when that is no more than ``max_retry_after`` seconds; a longer ban drops
  the message), and cuts a text longer than Telegram's 4096 characters. A call blocks for at
  most about ``min_interval + 2 × timeout + max_retry_after`` seconds.
* :func:`notifier_from_env` picks one from ``TRADEFLOW_TELEGRAM_BOT_TOKEN`` and
  ``TRADEFLOW_TELEGRAM_CHAT_ID`` (environment, ``.env``; the token also from the OS keyring,
  service ``tradeflow``, as broker credentials are): both set → Telegram, neither → the log,
  only one → :class:`~tradeflow.errors.ConfigError`. ``TRADEFLOW_TELEGRAM_URL`` replaces
  the API address (a local fake in tests).

The bot token is a secret: it is kept as a ``SecretStr``, and every text this module logs
or raises has it (and any ``/bot…`` path) blanked; a filter does the same to the request
lines urllib3 logs at DEBUG level. Plain ``http://`` is refused except to a loopback
address, so the token never travels in clear text.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError

__all__ = ["EVENTS", "Notifier", "LogNotifier", "TelegramNotifier", "BackgroundNotifier", "notifier_from_env"]

log = logging.getLogger(__name__)

EVENTS = ("start", "stop", "fill", "error", "summary", "kill")
"""The events the engine sends. Others are allowed (and sent the same way)."""

TELEGRAM_URL = "https://api.telegram.org"
TELEGRAM_MAX_CHARS = 4096
"""Telegram's limit on a message's text, counted in UTF-16 code units."""

_LEVELS = {
    "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "warn": logging.WARNING,
    "error": logging.ERROR, "critical": logging.CRITICAL,
}
_BOT_PATH = re.compile(r"/bot[^/\s'\"]+")
_LOOPBACK = ("127.", "::1", "[::1]", "localhost")
_sleep = time.sleep  # module-level so tests can replace it
_monotonic = time.monotonic


def _level(level: object) -> int:
    """A logging level from ``"info"``/``"warning"``/... (or an int); unknown names are INFO."""
    if isinstance(level, int):
        return level
    return _LEVELS.get(str(level).lower(), logging.INFO)


@runtime_checkable
class Notifier(Protocol):
    """Where the engine's messages go. ``send`` must not raise: failures are logged and dropped.

    ``event`` is one of :data:`EVENTS` (or another short word); ``level`` one of ``"debug"``,
    ``"info"``, ``"warning"``, ``"error"``, ``"critical"``.
    """

    def send(self, event: str, text: str, *, level: str = "info") -> None: ...


class LogNotifier:
    """Log each message as ``"<event>: <text>"`` at its level (logger ``tradeflow.notify``)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or log

    def send(self, event: str, text: str, *, level: str = "info") -> None:
        try:
            self.logger.log(_level(level), "%s: %s", event, text)
        except Exception:  # a broken handler must not stop the trading loop
            pass

    def __repr__(self) -> str:
        return f"LogNotifier(logger={self.logger.name!r})"


def _truncate(text: str, limit: int = TELEGRAM_MAX_CHARS) -> str:
    """``text`` cut to ``limit`` UTF-16 code units (Telegram's count), ending in "…" when cut."""
    units = text.encode("utf-16-le")
    if len(units) <= 2 * limit:
        return text
    return units[: 2 * (limit - 1)].decode("utf-16-le", errors="ignore") + "…"


class _RedactBotPath(logging.Filter):
    """Blank ``/bot<token>`` in urllib3's debug lines (it logs every request path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        if "/bot" in message:
            record.msg, record.args = _BOT_PATH.sub("/bot<redacted>", message), None
        return True


_redact_filter = _RedactBotPath()


def _guard_http_logs() -> None:
    for name in ("urllib3.connectionpool", "requests.packages.urllib3.connectionpool"):
        logger = logging.getLogger(name)
        if _redact_filter not in logger.filters:
            logger.addFilter(_redact_filter)


class TelegramNotifier:
    """Post messages to one Telegram chat with a bot (see the module docstring), and log them.

    ``bot_token``: the token BotFather gave (``123456:ABC…``); ``chat_id``: the chat's id (a
    number as text, or ``@channel``). ``base_url``: the Bot API address. ``timeout``: seconds
    per HTTP attempt. ``session``: a ``requests.Session`` to use (default: a private one).
    ``min_interval``: seconds to leave between two messages. ``max_retry_after``: the longest
    Telegram-requested wait (HTTP 429) that is waited out before the one retry.
    """

    def __init__(
        self,
        bot_token: SecretStr | str,
        chat_id: str,
        *,
        base_url: str = TELEGRAM_URL,
        timeout: float = 5.0,
        session=None,
        min_interval: float = 1.0,
        max_retry_after: float = 5.0,
    ) -> None:
        token = bot_token.get_secret_value() if isinstance(bot_token, SecretStr) else str(bot_token or "")
        token = token.strip()
        if not token:
            raise ConfigError("Telegram notifier: the bot token is empty; set TRADEFLOW_TELEGRAM_BOT_TOKEN")
        if any(c.isspace() or c in "/?#" for c in token):
            raise ConfigError("Telegram notifier: the bot token has spaces or URL characters (/?#); "
                              "copy it again from BotFather (it looks like 123456:ABC...)")
        chat = str(chat_id if chat_id is not None else "").strip()
        if not chat:
            raise ConfigError("Telegram notifier: the chat id is empty; set TRADEFLOW_TELEGRAM_CHAT_ID")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"Telegram notifier: base_url {base_url!r} is not an http(s) address")
        if parts.scheme == "http" and not parts.hostname.startswith(_LOOPBACK):
            raise ConfigError(f"Telegram notifier: base_url {base_url!r} is plain http; the bot token would travel "
                              "in clear text, use https (http is allowed only to a loopback address)")
        if not (timeout > 0 and min_interval >= 0 and max_retry_after >= 0):
            raise ConfigError("Telegram notifier: timeout must be > 0, min_interval and max_retry_after >= 0")
        self._token = SecretStr(token)
        self.chat_id = chat
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.min_interval = float(min_interval)
        self.max_retry_after = float(max_retry_after)
        self._session = session
        self._own_session = session is None
        self._log = LogNotifier()
        self._lock = threading.Lock()
        self._last_post: float | None = None
        _guard_http_logs()

    def __repr__(self) -> str:
        return f"TelegramNotifier(chat_id={self.chat_id!r}, base_url={self.base_url!r}, token=**********)"

    # ------------------------------------------------------------------ sending

    def send(self, event: str, text: str, *, level: str = "info") -> None:
        """Log the message, then post it to the chat; never raises (a failure is logged)."""
        self._log.send(event, text, level=level)
        try:
            with self._lock:
                self._post(event, _truncate(str(text)))
        except Exception as exc:  # noqa: BLE001 - the trading loop must never see a notifier failure
            self._warn(event, f"unexpected {type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Close the HTTP session this notifier opened (a given ``session`` is left open)."""
        if self._own_session and self._session is not None:
            self._session.close()
            self._session = None

    def _redact(self, text: str) -> str:
        token = self._token.get_secret_value()
        return _BOT_PATH.sub("/bot<redacted>", str(text).replace(token, "<redacted>"))

    def _warn(self, event: str, why: str) -> None:
        try:
            log.warning("telegram: the %r message was not delivered: %s", event, self._redact(why))
        except Exception:
            pass

    def _http(self):
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    def _pace(self) -> None:
        if self._last_post is not None and self.min_interval > 0:
            wait = self.min_interval - (_monotonic() - self._last_post)
            if wait > 0:
                _sleep(wait)

    def _post(self, event: str, text: str) -> None:
        import requests

        url = f"{self.base_url}/bot{self._token.get_secret_value()}/sendMessage"
        body = {"chat_id": self.chat_id, "text": text}
        for attempt in (1, 2):
            self._pace()
            try:
                r = self._http().post(url, json=body, timeout=self.timeout)
            except requests.RequestException as exc:
                self._last_post = _monotonic()
                if attempt == 1:
                    log.info("telegram: %s (%s); retrying once", type(exc).__name__, self._redact(str(exc)))
                    continue
                self._warn(event, f"{type(exc).__name__}: {exc}")
                return
            self._last_post = _monotonic()
            reply = _json(r)
            if r.status_code == 200 and reply.get("ok", True) is not False:
                return
            description = reply.get("description") or r.reason or ""
            if r.status_code == 429 and attempt == 1:
                wait = _retry_after(reply, r)
                if wait <= self.max_retry_after:
                    log.info("telegram: rate limited; retrying in %.1f s", wait)
                    _sleep(wait)
                    self._last_post = None  # the wait above already spaced the retry
                    continue
                self._warn(event, f"HTTP 429 {description}: Telegram asks to wait {wait:g} s, "
                                  f"more than max_retry_after={self.max_retry_after:g} s")
                return
            self._warn(event, f"HTTP {r.status_code} {description}".strip())
            return


def _json(r) -> dict:
    try:
        data = r.json()
    except Exception:
        return {}
    return data if isinstance(data, dict) else {}


def _retry_after(reply: dict, r) -> float:
    """Seconds Telegram asks to wait: ``parameters.retry_after``, else the Retry-After header, else 1."""
    for value in ((reply.get("parameters") or {}).get("retry_after"), r.headers.get("Retry-After")):
        try:
            if value is not None:
                return max(0.0, float(value))
        except (TypeError, ValueError):
            continue
    return 1.0


class _TelegramSettings(BaseSettings):
    """``TRADEFLOW_TELEGRAM_*`` from the environment or ``.env`` (the conventions of ``tradeflow.config``)."""

    model_config = SettingsConfigDict(env_prefix="TRADEFLOW_TELEGRAM_", env_file=".env", extra="ignore",
                                      env_ignore_empty=True)

    bot_token: SecretStr | None = None
    chat_id: str | None = None
    url: str | None = None


class BackgroundNotifier:
    """Sends through ``inner`` on a daemon thread, so a slow network never stalls the trading loop.

    Messages keep their order; at most ``maxsize`` wait (more are logged and dropped);
    :meth:`close` (also run at interpreter exit) waits up to ``timeout`` seconds for them.
    """

    def __init__(self, inner: "Notifier", *, maxsize: int = 1000, timeout: float = 15.0) -> None:
        import atexit
        import queue

        self.inner = inner
        self.timeout = timeout
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            event, text, level = item
            try:
                self.inner.send(event, text, level=level)
            except Exception as exc:  # a notifier must never take the engine down
                log.error("notification %s failed: %s", event, type(exc).__name__)

    def send(self, event: str, text: str, *, level: str = "info") -> None:
        try:
            self._queue.put_nowait((event, text, level))
        except Exception:
            log.warning("notification queue full; dropped %s: %s", event, text[:200])

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(self.timeout)


_TOKEN_VAR = "TRADEFLOW_TELEGRAM_BOT_TOKEN"
_CHAT_VAR = "TRADEFLOW_TELEGRAM_CHAT_ID"


def notifier_from_env() -> Notifier:
    """The notifier the environment asks for: Telegram (which also logs) or the log alone.

    Reads ``TRADEFLOW_TELEGRAM_BOT_TOKEN`` (environment, ``.env``, else the OS keyring entry
    ``tradeflow``/``TRADEFLOW_TELEGRAM_BOT_TOKEN``), ``TRADEFLOW_TELEGRAM_CHAT_ID`` and, if set,
    ``TRADEFLOW_TELEGRAM_URL``. Only one of the two set raises ``ConfigError`` naming the other.
    """
    from .session import credential

    cfg = _TelegramSettings()
    token = cfg.bot_token if cfg.bot_token and cfg.bot_token.get_secret_value().strip() else credential(_TOKEN_VAR)
    chat = (cfg.chat_id or "").strip() or None
    if token and chat:
        return BackgroundNotifier(TelegramNotifier(token, chat, base_url=cfg.url or TELEGRAM_URL))
    if token or chat:
        missing, given = (_CHAT_VAR, _TOKEN_VAR) if token else (_TOKEN_VAR, _CHAT_VAR)
        raise ConfigError(
            f"Telegram notifications need both {_TOKEN_VAR} and {_CHAT_VAR}: {given} is set but {missing} is not; "
            f"set {missing} (environment or .env), or unset {given} to only log"
        )
    return LogNotifier()
