"""One error tree: every error the product defines is a CommonSkyError, carrying the hints
(`http_status`, `close`, `reason`, `counted`, `public()`) that the TAK listener and the HTTP
API read instead of each deciding again (errors.py)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import commonsky
from commonsky.deconflict.shapes import GeometryError, TooManyFeatures
from commonsky.errors import (
    CommonSkyError,
    LocalProtocolError,
    Refused,
    RemoteProtocolError,
    StoreUnavailable,
    UsageError,
)

TOOLING = ("bench", "conformance", "demo", "web")  # tools, not the product (issue 14, point 5)


def _product_modules() -> list[str]:
    out = []
    for info in pkgutil.walk_packages(commonsky.__path__, "commonsky."):
        top = info.name.split(".")[1]
        if top not in TOOLING and not info.name.endswith("__main__"):
            out.append(info.name)
    return out


def test_every_error_of_the_product_is_in_the_tree() -> None:
    outside = []
    for name in _product_modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
                and not attr.startswith("_")  # (control flow that never leaves its module)
                and not issubclass(value, CommonSkyError)
            ):
                outside.append(f"{name}.{attr}")
    assert outside == []


@pytest.mark.parametrize(
    ("error", "status", "close", "public"),
    [
        (RemoteProtocolError("malformed", "bad time"), 400, False, "bad time"),
        (Refused(404, "no such message"), 404, False, "no such message"),
        (GeometryError("ring", "not simple"), 400, False, "ring: not simple"),
        (TooManyFeatures("features", "too many"), 413, False, "features: too many"),
        (StoreUnavailable("server gone"), 503, True, "not stored, try again: server gone"),
        (LocalProtocolError("wrong state"), 500, True, "internal error (logged)"),
        (UsageError("bad flag"), 500, False, "internal error (logged)"),
    ],
)
def test_hints(error: CommonSkyError, status: int, close: bool, public: str) -> None:
    assert (error.http_status, error.close, error.public()) == (status, close, public)


def test_only_protocol_refusals_are_counted_as_refusals() -> None:
    assert RemoteProtocolError("quota", "x").counted
    assert not Refused(401, "unknown token").counted
    assert not StoreUnavailable("x").counted
    assert RemoteProtocolError("quota", "x").reason == "quota"
    assert Refused(403, "x").status == 403
