"""Broker sessions: credentials, TOTP logins, cached session keys, expiry and renewal.

Credentials come from the environment, ``.env`` or the OS keyring (service ``tradeflow``,
user = the variable name), never from notebook parameters. Nothing here prints, and no
secret reaches a log, an exception or a ``repr``.

* Dhan: client id + access token (``DHAN_ACCESS_TOKEN``), or one generated from
  ``DHAN_PIN`` + ``DHAN_TOTP_SECRET``; the expiry is read from the profile, and a token
  close to expiry is renewed.
* Definedge: API token + secret + TOTP secret → a login with a generated TOTP; the session
  keys are cached in ``data/session/definedge.json`` (mode 0600) with their time and
  reused the same trading day.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyotp
import requests
from pydantic import SecretStr

from .brokers.base import BrokerError, BrokerUnavailable, SessionExpired
from .calendar import IST
from .config import broker_settings, settings

__all__ = ["credential", "DhanSession", "DefinedgeSession", "dhan_session", "definedge_session", "status", "mask"]

log = logging.getLogger(__name__)

_KEYRING_SERVICE = "tradeflow"
STATIC_IP_REMINDER = "order APIs (place, modify, cancel) need your static IP whitelisted with the broker"


def mask(value: str | None) -> str:
    """An account id shown as ``AB****89``."""
    if not value:
        return "-"
    return value[:2] + "*" * max(len(value) - 4, 2) + value[-2:] if len(value) > 4 else "*" * len(value)


def credential(name: str) -> SecretStr | None:
    """``name`` (e.g. ``DHAN_ACCESS_TOKEN``) from the environment / ``.env``, else the OS keyring."""
    value = getattr(broker_settings(), name.lower(), None)
    if value:
        return value if isinstance(value, SecretStr) else SecretStr(str(value))
    try:
        import keyring

        stored = keyring.get_password(_KEYRING_SERVICE, name)
    except Exception:  # no keyring backend on this machine: the environment is the only source
        stored = None
    return SecretStr(stored) if stored else None


def _need(name: str, what: str) -> SecretStr:
    value = credential(name)
    if value is None:
        raise SessionExpired(
            f"{what}: {name} is not set; put it in the environment or .env, or run "
            f"`keyring set tradeflow {name}`"
        )
    return value


def _totp(name: str, what: str) -> str:
    """The current TOTP code from the secret in ``name``; a malformed secret says so."""
    try:
        return pyotp.TOTP(_need(name, what).get_secret_value()).now()
    except (ValueError, TypeError) as exc:
        raise SessionExpired(f"{what}: {name} is not a valid base32 TOTP secret ({exc})") from None


def _session_dir() -> Path:
    path = settings().data_dir / "session"
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


# ---------------------------------------------------------------------- Dhan


@dataclass
class DhanSession:
    client_id: str
    access_token: SecretStr
    expires_at: pd.Timestamp | None = None

    def __repr__(self) -> str:
        return f"DhanSession(client_id={mask(self.client_id)!r}, expires_at={self.expires_at})"


def _dhan_profile(client_id: str, token: SecretStr) -> dict:
    cfg = broker_settings()
    try:
        r = requests.get(
            cfg.dhan_base_url.rstrip("/") + "/profile",
            headers={"access-token": token.get_secret_value(), "client-id": client_id, "Accept": "application/json"},
            timeout=cfg.http_timeout,
        )
    except requests.RequestException as exc:
        raise BrokerUnavailable(f"Dhan profile could not be read ({type(exc).__name__}); check the network") from None
    if r.status_code in (401, 403) or "DH-901" in r.text:
        raise SessionExpired("the Dhan access token is invalid or expired: generate a new one (or set DHAN_PIN and DHAN_TOTP_SECRET)")
    if r.status_code >= 400:
        raise BrokerUnavailable(f"Dhan profile answered HTTP {r.status_code}")
    return r.json()


def _parse_validity(value: str | None) -> pd.Timestamp | None:
    if not value:
        return None
    for fmt in ("%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"):
        try:
            return pd.Timestamp(dt.datetime.strptime(value, fmt)).tz_localize(IST)
        except ValueError:
            continue
    log.warning("could not read the Dhan token validity %r", value)
    return None


def _dhan_generate(client_id: str) -> SecretStr:
    cfg = broker_settings()
    pin = _need("DHAN_PIN", "Dhan token generation")
    totp = _totp("DHAN_TOTP_SECRET", "Dhan token generation")
    try:
        r = requests.post(
            cfg.dhan_auth_url.rstrip("/") + "/app/generateAccessToken",
            params={"dhanClientId": client_id, "pin": pin.get_secret_value(), "totp": totp},
            timeout=cfg.http_timeout,
        )
    except requests.RequestException as exc:
        raise BrokerUnavailable(f"Dhan token generation failed ({type(exc).__name__}); check the network") from None
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    token = body.get("accessToken")
    if r.status_code >= 400 or not token:
        raise SessionExpired(
            f"Dhan refused to generate a token (HTTP {r.status_code}); check DHAN_PIN and DHAN_TOTP_SECRET and that TOTP is enabled"
        )
    return SecretStr(token)


def dhan_session(*, renew_within: pd.Timedelta = pd.Timedelta(hours=1)) -> DhanSession:
    """A usable Dhan session: the configured token, or one generated with PIN + TOTP.

    A token that expires within ``renew_within`` is renewed (GET /RenewToken); one that has
    expired and cannot be regenerated raises ``SessionExpired`` saying what to do.
    """
    cfg = broker_settings()
    client_id = cfg.dhan_client_id
    if not client_id:
        raise SessionExpired("Dhan: DHAN_CLIENT_ID is not set; put it in the environment or .env")
    token = credential("DHAN_ACCESS_TOKEN")
    if token is None:
        if credential("DHAN_PIN") is None:
            raise SessionExpired("Dhan: set DHAN_ACCESS_TOKEN, or DHAN_PIN and DHAN_TOTP_SECRET to generate one")
        token = _dhan_generate(client_id)
    try:
        profile = _dhan_profile(client_id, token)
    except SessionExpired:
        if credential("DHAN_PIN") is None:
            raise
        token = _dhan_generate(client_id)
        profile = _dhan_profile(client_id, token)
    expires = _parse_validity(profile.get("tokenValidity"))
    if expires is not None and expires - pd.Timestamp.now(tz=IST) < renew_within:
        token, expires = _dhan_renew(client_id, token), None
        expires = _parse_validity(_dhan_profile(client_id, token).get("tokenValidity"))
    return DhanSession(client_id, token, expires)


def _dhan_renew(client_id: str, token: SecretStr) -> SecretStr:
    cfg = broker_settings()
    try:
        r = requests.get(
            cfg.dhan_base_url.rstrip("/") + "/RenewToken",
            headers={"access-token": token.get_secret_value(), "dhanClientId": client_id},
            timeout=cfg.http_timeout,
        )
    except requests.RequestException as exc:
        raise BrokerUnavailable(f"Dhan token renewal failed ({type(exc).__name__})") from None
    new = r.json().get("token") or r.json().get("accessToken") if r.content else None
    if r.status_code >= 400 or not new:
        raise SessionExpired("Dhan did not renew the access token; generate a new one before it expires")
    log.info("Dhan access token renewed")
    return SecretStr(new)


# ---------------------------------------------------------------------- Definedge


@dataclass
class DefinedgeSession:
    uid: str
    actid: str
    api_session_key: SecretStr
    ws_session_key: SecretStr
    created_at: pd.Timestamp

    def keys(self) -> tuple[str, str, str, str]:
        """The four values ``ConnectToIntegrate.set_session_keys`` takes."""
        return self.uid, self.actid, self.api_session_key.get_secret_value(), self.ws_session_key.get_secret_value()

    def __repr__(self) -> str:
        return f"DefinedgeSession(actid={mask(self.actid)!r}, created_at={self.created_at})"


def _definedge_cache() -> Path:
    return _session_dir() / "definedge.json"


def _definedge_login() -> DefinedgeSession:
    cfg = broker_settings()
    token = _need("DEFINEDGE_API_TOKEN", "Definedge login")
    secret = _need("DEFINEDGE_API_SECRET", "Definedge login")
    _need("DEFINEDGE_TOTP_SECRET", "Definedge login")
    base = cfg.definedge_login_url if cfg.definedge_login_url.endswith("/") else cfg.definedge_login_url + "/"
    try:
        step1 = requests.get(base + "login/" + token.get_secret_value(),
                             headers={"api_secret": secret.get_secret_value()}, timeout=cfg.http_timeout)
        otp_token = step1.json().get("otp_token") if step1.ok else None
        if not otp_token:
            raise SessionExpired(f"Definedge refused the API token (HTTP {step1.status_code}); check DEFINEDGE_API_TOKEN and DEFINEDGE_API_SECRET")
        otp = _totp("DEFINEDGE_TOTP_SECRET", "Definedge login")
        ac = hashlib.sha256((otp_token + otp + secret.get_secret_value()).encode()).hexdigest()
        step2 = requests.post(base + "token", json={"otp_token": otp_token, "otp": otp, "ac": ac}, timeout=cfg.http_timeout)
    except requests.RequestException as exc:
        raise BrokerUnavailable(f"Definedge login failed ({type(exc).__name__}); check the network") from None
    body = step2.json() if step2.ok else {}
    if not body.get("api_session_key"):
        raise SessionExpired(f"Definedge login failed (HTTP {step2.status_code}); check DEFINEDGE_TOTP_SECRET and the clock")
    session = DefinedgeSession(
        str(body["uid"]), str(body["actid"]), SecretStr(body["api_session_key"]), SecretStr(body.get("susertoken", "")),
        pd.Timestamp.now(tz="UTC"),
    )
    _save_definedge(session)
    log.info("Definedge login for %s", mask(session.actid))
    return session


def _save_definedge(session: DefinedgeSession) -> None:
    path = _definedge_cache()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"uid": session.uid, "actid": session.actid, "api_session_key": session.api_session_key.get_secret_value(),
                   "ws_session_key": session.ws_session_key.get_secret_value(), "created_at": session.created_at.isoformat()}, fh)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def definedge_session(*, refresh: bool = False) -> DefinedgeSession:
    """Cached Definedge session keys from today (IST), else a fresh TOTP login.

    ``refresh=True`` logs in again: the adapter calls this once on "Session Expired"
    before retrying the call.
    """
    path = _definedge_cache()
    if not refresh and path.exists():
        try:
            data = json.loads(path.read_text())
            created = pd.Timestamp(data["created_at"])
            if created.tz_convert(IST).date() == pd.Timestamp.now(tz=IST).date():
                return DefinedgeSession(data["uid"], data["actid"], SecretStr(data["api_session_key"]),
                                        SecretStr(data["ws_session_key"]), created)
        except (ValueError, KeyError, json.JSONDecodeError):
            log.warning("the cached Definedge session is unreadable; logging in again")
    return _definedge_login()


def status() -> list[dict]:
    """Per broker: configured or not, logged in or not, expiry countdown, masked account."""
    rows = []
    cfg = broker_settings()
    row = {"broker": "dhan", "account": mask(cfg.dhan_client_id), "logged_in": False, "expires_in": "-", "note": STATIC_IP_REMINDER}
    if cfg.dhan_client_id and (credential("DHAN_ACCESS_TOKEN") or credential("DHAN_PIN")):
        try:
            s = dhan_session(renew_within=pd.Timedelta(0))
            row["logged_in"] = True
            if s.expires_at is not None:
                row["expires_in"] = str((s.expires_at - pd.Timestamp.now(tz=IST)).floor("min"))
        except BrokerError as exc:
            row["note"] = str(exc)
    else:
        row["note"] = "not configured: set DHAN_CLIENT_ID and DHAN_ACCESS_TOKEN (or DHAN_PIN + DHAN_TOTP_SECRET)"
    rows.append(row)
    row = {"broker": "definedge", "account": "-", "logged_in": False, "expires_in": "-", "note": STATIC_IP_REMINDER}
    path = _definedge_cache()
    if path.exists():
        try:
            data = json.loads(path.read_text())
            created = pd.Timestamp(data["created_at"]).tz_convert(IST)
            row["account"] = mask(data.get("actid"))
            row["logged_in"] = created.date() == pd.Timestamp.now(tz=IST).date()
            end_of_day = created.normalize() + pd.Timedelta(days=1)
            row["expires_in"] = str((end_of_day - pd.Timestamp.now(tz=IST)).floor("min")) if row["logged_in"] else "expired"
        except (ValueError, KeyError, json.JSONDecodeError):
            row["note"] = "cached session unreadable: run `tradeflow session login --broker definedge`"
    elif not credential("DEFINEDGE_API_TOKEN"):
        row["note"] = "not configured: set DEFINEDGE_API_TOKEN, DEFINEDGE_API_SECRET, DEFINEDGE_TOTP_SECRET"
    rows.append(row)
    return rows
