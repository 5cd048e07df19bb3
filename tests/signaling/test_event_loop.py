"""``signaling.event_loop``: the loop callrt's own programs run on, chosen by ``CALLRT_LOOP``."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import warnings

import pytest

from signaling import event_loop
from signaling.errors import InvalidRequest

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def _which() -> tuple[str, str]:
    await asyncio.sleep(0)
    return event_loop.running_loop_name(), type(asyncio.get_running_loop()).__module__


@pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop is not installed")
def test_uvloop_by_default_when_installed(monkeypatch):
    monkeypatch.delenv(event_loop.ENV, raising=False)
    name, module = event_loop.run(_which())
    assert name == "uvloop" and module.startswith("uvloop")
    monkeypatch.setenv(event_loop.ENV, "auto")
    assert event_loop.run(_which())[0] == "uvloop"


def test_callrt_loop_asyncio_keeps_asyncios_loop(monkeypatch):
    monkeypatch.setenv(event_loop.ENV, " AsyncIO ")
    name, module = event_loop.run(_which())
    assert name == "asyncio" and module.startswith("asyncio")


def test_an_explicit_loop_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv(event_loop.ENV, "uvloop" if HAS_UVLOOP else "auto")
    assert event_loop.run(_which(), loop="asyncio")[0] == "asyncio"


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_typed_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a))
    monkeypatch.delenv(event_loop.ENV, raising=False)
    assert event_loop.run(_which())[0] == "asyncio"
    with pytest.raises(InvalidRequest, match="not installed") as err:
        event_loop.run(_which(), loop="uvloop")
    assert err.value.code == "invalid_request"


def test_an_unknown_loop_is_a_typed_error_and_the_coroutine_is_closed(monkeypatch):
    monkeypatch.setenv(event_loop.ENV, "trio")
    main = _which()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InvalidRequest, match="CALLRT_LOOP='trio'") as err:
            event_loop.run(main)
        gc.collect()
    assert err.value.code == "invalid_request"
    assert main.cr_frame is None  # closed, not left pending
    assert not [w for w in caught if "never awaited" in str(w.message)]
