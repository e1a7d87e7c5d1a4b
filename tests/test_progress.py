"""Long work reports progress off a terminal too: periodic log lines where tqdm shows no bar."""

import logging

from asa_deploy import progress as progress_module
from asa_deploy.progress import LogLines, progress


def _lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "asa_deploy.progress"]


def test_off_a_terminal_progress_is_log_lines_with_counts_and_time_left(monkeypatch, caplog):
    monkeypatch.setattr(progress_module, "LOG_EVERY_S", 0.0)  # a line at every step
    with caplog.at_level(logging.INFO, logger="asa_deploy.progress"):
        bar = progress(range(4), desc="simulate exact", unit="window")  # pytest's stderr: no TTY
        assert isinstance(bar, LogLines)
        assert list(bar) == [0, 1, 2, 3]
    lines = _lines(caplog)
    assert lines[0].startswith("simulate exact: 1/4 window (25 %), 0s elapsed, about ")
    assert lines[-2].startswith("simulate exact: 4/4 window (100 %)")
    assert lines[-1] == "simulate exact: 4/4 window (100 %), 0s elapsed"  # the closing line
    assert len(lines) == 5


def test_updates_by_hand_with_a_postfix_close_once(monkeypatch, caplog):
    monkeypatch.setattr(progress_module, "LOG_EVERY_S", 3600.0)  # only the closing line
    with caplog.at_level(logging.INFO, logger="asa_deploy.progress"):
        with progress(total=10, desc="fine-tune 1/2", unit="batch") as bar:
            bar.update(6)
            bar.set_postfix(loss="0.1234")
            bar.close()
    assert _lines(caplog) == ["fine-tune 1/2: 6/10 batch (60 %), 0s elapsed, loss=0.1234"]


def test_disabled_progress_says_nothing(monkeypatch, caplog):
    monkeypatch.setattr(progress_module, "LOG_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="asa_deploy.progress"):
        assert list(progress(iter([1, 2]), desc="evaluate", enabled=False)) == [1, 2]
    assert _lines(caplog) == []
