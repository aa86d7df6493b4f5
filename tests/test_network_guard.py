"""The suite itself cannot reach anything but loopback."""

import socket

import pytest


def test_outside_addresses_are_refused():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(ConnectionRefusedError, match="only reach 127.0.0.1"):
            s.connect(("203.0.113.10", 443))  # TEST-NET-3, never routed
    finally:
        s.close()


def test_broker_settings_point_at_loopback():
    from tradeflow.config import broker_settings

    b = broker_settings()
    assert b.dhan_base_url.startswith("http://127.0.0.1") and b.definedge_base_url.startswith("http://127.0.0.1")
    assert b.dhan_access_token is None and b.definedge_api_secret is None
