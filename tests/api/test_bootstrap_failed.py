"""The failure reason a control plane's ``bootstrap-failed`` report becomes (the route itself, end to end
against the control-plane emulator, is in the controlplane plugin's tests)."""

from __future__ import annotations

from molecule_box.api.bootstrap import REASON_CAP, failure_reason
from molecule_box.schemas import BootstrapFailed


def test_error_then_the_tail() -> None:
    reason = failure_reason(BootstrapFailed(error="ImportError: langgraph", log_tail="boot\nRUNTIME CRASHED"))
    assert reason == "bootstrap failed: ImportError: langgraph\nboot\nRUNTIME CRASHED"


def test_an_empty_report_still_says_what_happened() -> None:
    assert failure_reason(BootstrapFailed()) == "bootstrap failed: the runtime crashed while booting"


def test_capped_keeping_the_error_and_the_tail_end() -> None:
    tail = "".join(f"line {n}\n" for n in range(5000)) + "RUNTIME CRASHED: é"
    reason = failure_reason(BootstrapFailed(error="boom", log_tail=tail))
    assert len(reason.encode()) <= REASON_CAP
    assert reason.startswith("bootstrap failed: boom\n")
    assert reason.endswith("RUNTIME CRASHED: é")
