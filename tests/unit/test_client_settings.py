"""Where the client commands send their requests: --url/--token, then GNOMON_URL/GNOMON_TOKEN, then defaults
(and the server's own first token, for a client on the server's machine)."""

from __future__ import annotations

import pytest

from entrypoints.settings import DEFAULT_URL, ClientSettings, SettingsError, load_client_settings


def test_defaults_without_anything() -> None:
    assert load_client_settings({}, {}) == ClientSettings(url=DEFAULT_URL, token=None)


def test_flags_beat_the_environment() -> None:
    environ = {"GNOMON_URL": "http://env:1", "GNOMON_TOKEN": "from-env"}
    assert load_client_settings({}, environ) == ClientSettings(url="http://env:1", token="from-env")
    found = load_client_settings({"url": "https://flag:2", "token": "from-flag"}, environ)
    assert found == ClientSettings(url="https://flag:2", token="from-flag")


def test_without_a_token_the_first_api_token_serves() -> None:
    assert load_client_settings({}, {"GNOMON_API_TOKENS": " a , b"}).token == "a"
    assert load_client_settings({}, {"GNOMON_API_TOKENS": "a", "GNOMON_TOKEN": "t"}).token == "t"


def test_a_bad_url_names_where_it_came_from() -> None:
    with pytest.raises(SettingsError, match="GNOMON_URL: must be a URL with scheme http or https"):
        load_client_settings({}, {"GNOMON_URL": "redis://x"})
    with pytest.raises(SettingsError, match="--url"):
        load_client_settings({"url": "nowhere"}, {})


def test_the_token_is_not_shown_in_reprs() -> None:
    assert "s3cret" not in repr(ClientSettings(token="s3cret"))
