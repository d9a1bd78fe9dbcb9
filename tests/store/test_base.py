"""`redacted`: a store URL as messages, logs and hub.json show it — no password, wherever
libpq takes one (user information, `password=` and `sslpassword=` query parameters)."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from commonsky.store import redacted

#: What a password may be written with in each place (the query's `&` and `#` percent-encoded,
#: as in the user information `@`, `/` and `:`), marked so it cannot be found elsewhere.
SAFE = string.ascii_letters + string.digits + "-._~!$'()*+,;=%"
PASSWORD = st.text(SAFE, min_size=1, max_size=30).map(lambda text: "Zq!" + text)
PLACES = [
    "postgresql://hub:{pw}@db.example:5432/hub",
    "postgresql://hub@db.example:5432/hub?password={pw}",
    "postgresql://hub@db.example/hub?sslmode=require&password={pw}&connect_timeout=5",
    "postgresql://hub@db.example/hub?sslpassword={pw}",
    "postgres://:{pw}@db.example/hub?application_name=x",
]


@given(PASSWORD, st.sampled_from(PLACES))
def test_no_password_survives(password: str, place: str) -> None:
    url = place.format(pw=password)
    shown = redacted(url)
    assert "Zq!" not in shown
    assert shown == place.format(pw="***")


def test_a_url_without_password_is_unchanged() -> None:
    url = "postgresql://hub@db.example:5432/hub?sslmode=require"
    assert redacted(url) == url
