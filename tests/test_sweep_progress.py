"""The sweep's status line (barapi.sweep.progress) goes through logging like a run's."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

pytest.importorskip("ray", reason="needs ray: the sweep extra (pip install -e '.[sweep]')")

from barapi.sweep import progress as module
from barapi.sweep.progress import Progress


def trials(*states: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(status=s) for s in states]


def test_the_status_line_is_an_info_record_on_the_sweep_logger(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_wallet(*args: object, **kwargs: object) -> None:
        raise ValueError("no such actor")  # as Ray says when the wallet is gone

    monkeypatch.setattr(module.ray, "get_actor", no_wallet)
    progress = Progress("no-such-wallet", "no-such-namespace", total=4, every=5.0)
    with caplog.at_level(logging.INFO, logger="barapi.sweep"):
        progress.on_trial_complete(1, trials("RUNNING", "TERMINATED", "ERROR"), None)
        progress.on_step_end(2, trials("RUNNING", "TERMINATED", "ERROR"))  # within 5 s: quiet
    said = [r.getMessage() for r in caplog.records if r.name == "barapi.sweep"]
    assert said == ["sweep: 1 running · 1 done · 1 stopped · 1 pending of 4 · wallet not reachable"]


def test_quiet_means_no_line_and_no_wallet_call(monkeypatch: pytest.MonkeyPatch) -> None:
    logging.getLogger("barapi.sweep").setLevel(logging.WARNING)
    try:
        progress = Progress("w", "n", total=1)
        monkeypatch.setattr(progress, "line", lambda t: pytest.fail("asked the wallet while quiet"))
        progress.on_trial_complete(1, trials("TERMINATED"), None)
    finally:
        logging.getLogger("barapi.sweep").setLevel(logging.NOTSET)
