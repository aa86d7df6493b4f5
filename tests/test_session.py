"""Sessions against fake broker servers on 127.0.0.1: TOTP logins, cache, expiry, renewal, no leaks."""

from __future__ import annotations

import hashlib
import json
import logging
import stat

import pandas as pd
import pyotp
import pytest
from werkzeug import Response

from tradeflow import session as sess
from tradeflow.brokers.base import SessionExpired

TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
FAKE = {"token": "tok-SECRET-1111", "secret": "sec-SECRET-2222", "key": "key-SECRET-3333", "dhan": "dhan-SECRET-4444", "pin": "9876"}


def _no_secret_in(text: str) -> None:
    for value in FAKE.values():
        assert value not in text


@pytest.fixture
def definedge_env(httpserver, monkeypatch):
    monkeypatch.setenv("DEFINEDGE_LOGIN_URL", httpserver.url_for("/auth/"))
    monkeypatch.setenv("DEFINEDGE_API_TOKEN", FAKE["token"])
    monkeypatch.setenv("DEFINEDGE_API_SECRET", FAKE["secret"])
    monkeypatch.setenv("DEFINEDGE_TOTP_SECRET", TOTP_SECRET)
    seen = []

    def token_handler(request):
        body = request.get_json()
        seen.append(body)
        expected = hashlib.sha256((body["otp_token"] + body["otp"] + FAKE["secret"]).encode()).hexdigest()
        ok = body["ac"] == expected and pyotp.TOTP(TOTP_SECRET).verify(body["otp"], valid_window=1)
        if not ok:
            return Response(json.dumps({"status": "ERROR", "message": "bad otp"}), status=401, content_type="application/json")
        return Response(json.dumps({"uid": "U1", "actid": "AC123456", "api_session_key": FAKE["key"], "susertoken": "ws-key", "stat": "Ok"}),
                        content_type="application/json")

    # (werkzeug's server drops header names with underscores, so `api_secret` cannot be checked here)
    httpserver.expect_request(f"/auth/login/{FAKE['token']}", method="GET").respond_with_json({"otp_token": "OTPTOK"})
    httpserver.expect_request("/auth/token", method="POST").respond_with_handler(token_handler)
    return seen


def test_definedge_login_with_totp_caches_keys_0600_and_reuses_them(definedge_env, httpserver, caplog):
    caplog.set_level(logging.DEBUG)
    s = sess.definedge_session()
    assert s.keys() == ("U1", "AC123456", FAKE["key"], "ws-key")
    assert definedge_env[0]["otp_token"] == "OTPTOK"
    cache = sess._definedge_cache()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    n = len(httpserver.log)
    again = sess.definedge_session()
    assert again.keys() == s.keys() and len(httpserver.log) == n  # reused, no new login
    sess.definedge_session(refresh=True)
    assert len(httpserver.log) == n + 2
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("tradeflow"))
    _no_secret_in(repr(s) + ours)


def test_definedge_cached_keys_from_another_day_are_not_reused(definedge_env, httpserver):
    sess.definedge_session()
    data = json.loads(sess._definedge_cache().read_text())
    data["created_at"] = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=2)).isoformat()
    sess._definedge_cache().write_text(json.dumps(data))
    n = len(httpserver.log)
    sess.definedge_session()
    assert len(httpserver.log) == n + 2


def test_definedge_missing_credentials_say_what_to_set(monkeypatch):
    with pytest.raises(SessionExpired, match="DEFINEDGE_API_TOKEN is not set"):
        sess.definedge_session()


def test_definedge_bad_secret_is_refused_without_leaking(httpserver, monkeypatch):
    monkeypatch.setenv("DEFINEDGE_LOGIN_URL", httpserver.url_for("/auth/"))
    monkeypatch.setenv("DEFINEDGE_API_TOKEN", FAKE["token"])
    monkeypatch.setenv("DEFINEDGE_API_SECRET", FAKE["secret"])
    monkeypatch.setenv("DEFINEDGE_TOTP_SECRET", TOTP_SECRET)
    httpserver.expect_request(f"/auth/login/{FAKE['token']}").respond_with_json({"status": "ERROR"}, status=401)
    with pytest.raises(SessionExpired) as info:
        sess.definedge_session()
    assert "check DEFINEDGE_API_TOKEN" in str(info.value)
    _no_secret_in(str(info.value))


@pytest.fixture
def dhan_env(httpserver, monkeypatch):
    monkeypatch.setenv("DHAN_BASE_URL", httpserver.url_for("/v2"))
    monkeypatch.setenv("DHAN_AUTH_URL", httpserver.url_for("/auth"))
    monkeypatch.setenv("DHAN_CLIENT_ID", "1100012345")
    return httpserver


def _validity(delta: pd.Timedelta) -> str:
    return (pd.Timestamp.now(tz="Asia/Kolkata") + delta).strftime("%d/%m/%Y %H:%M")


def test_dhan_token_expiry_read_from_profile(dhan_env, monkeypatch):
    monkeypatch.setenv("DHAN_ACCESS_TOKEN", FAKE["dhan"])
    dhan_env.expect_request("/v2/profile", headers={"access-token": FAKE["dhan"], "client-id": "1100012345"}).respond_with_json(
        {"dhanClientId": "1100012345", "tokenValidity": _validity(pd.Timedelta(hours=20))})
    s = sess.dhan_session()
    assert s.access_token.get_secret_value() == FAKE["dhan"]
    assert pd.Timedelta(hours=19) < s.expires_at - pd.Timestamp.now(tz="Asia/Kolkata") < pd.Timedelta(hours=21)
    _no_secret_in(repr(s))
    rows = {r["broker"]: r for r in sess.status()}
    assert rows["dhan"]["logged_in"] and rows["dhan"]["account"] == "11******45"
    assert "static IP" in rows["dhan"]["note"]


def test_dhan_token_near_expiry_is_renewed(dhan_env, monkeypatch):
    monkeypatch.setenv("DHAN_ACCESS_TOKEN", FAKE["dhan"])
    dhan_env.expect_ordered_request("/v2/profile", headers={"access-token": FAKE["dhan"]}).respond_with_json(
        {"tokenValidity": _validity(pd.Timedelta(minutes=20))})
    dhan_env.expect_ordered_request("/v2/RenewToken", headers={"access-token": FAKE["dhan"], "dhanClientId": "1100012345"}).respond_with_json(
        {"token": "renewed-token"})
    dhan_env.expect_ordered_request("/v2/profile", headers={"access-token": "renewed-token"}).respond_with_json(
        {"tokenValidity": _validity(pd.Timedelta(hours=24))})
    s = sess.dhan_session()
    assert s.access_token.get_secret_value() == "renewed-token"


def test_dhan_expired_token_regenerated_with_pin_and_totp(dhan_env, monkeypatch):
    monkeypatch.setenv("DHAN_ACCESS_TOKEN", FAKE["dhan"])
    monkeypatch.setenv("DHAN_PIN", FAKE["pin"])
    monkeypatch.setenv("DHAN_TOTP_SECRET", TOTP_SECRET)
    dhan_env.expect_ordered_request("/v2/profile", headers={"access-token": FAKE["dhan"]}).respond_with_json(
        {"errorCode": "DH-901", "errorMessage": "expired"}, status=401)
    dhan_env.expect_ordered_request("/auth/app/generateAccessToken", method="POST").respond_with_json({"accessToken": "fresh-token"})
    dhan_env.expect_ordered_request("/v2/profile", headers={"access-token": "fresh-token"}).respond_with_json(
        {"tokenValidity": _validity(pd.Timedelta(hours=24))})
    s = sess.dhan_session()
    assert s.access_token.get_secret_value() == "fresh-token"
    gen = [r for r, _ in dhan_env.log if r.path.endswith("generateAccessToken")][0]
    assert gen.args["dhanClientId"] == "1100012345" and gen.args["pin"] == FAKE["pin"]
    assert pyotp.TOTP(TOTP_SECRET).verify(gen.args["totp"], valid_window=1)


def test_dhan_expired_without_pin_says_what_to_do(dhan_env, monkeypatch):
    monkeypatch.setenv("DHAN_ACCESS_TOKEN", FAKE["dhan"])
    dhan_env.expect_request("/v2/profile").respond_with_json({"errorCode": "DH-901"}, status=401)
    with pytest.raises(SessionExpired, match="invalid or expired: generate a new one") as info:
        sess.dhan_session()
    _no_secret_in(str(info.value))


def test_keyring_is_a_credential_source(monkeypatch):
    import keyring

    monkeypatch.setattr(keyring, "get_password", lambda service, name: "from-keyring" if (service, name) == ("tradeflow", "DHAN_PIN") else None)
    assert sess.credential("DHAN_PIN").get_secret_value() == "from-keyring"
    assert sess.credential("DHAN_TOTP_SECRET") is None


def test_malformed_totp_secret_is_a_clear_error(dhan_env, monkeypatch):
    monkeypatch.setenv("DHAN_PIN", FAKE["pin"])
    monkeypatch.setenv("DHAN_TOTP_SECRET", "short")
    with pytest.raises(SessionExpired, match="DHAN_TOTP_SECRET is not a valid base32 TOTP secret"):
        sess.dhan_session()


def test_cli_session_status_and_login(definedge_env):
    from typer.testing import CliRunner

    from tradeflow.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["session", "login", "--broker", "definedge"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["session", "status"])
    assert res.exit_code == 0 and "definedge" in res.output and "AC****56" in res.output and "static IP" in res.output
    _no_secret_in(res.output)
    res = runner.invoke(app, ["session", "login", "--broker", "zerodha"])
    assert res.exit_code == 2 and "use dhan or definedge" in res.output
