"""The restart policy as plain arithmetic: intensity window, exponential backoff, the failure reason."""

from __future__ import annotations

import pytest

from molecule_box.actors.restart_policy import (
    MAX_DELAY,
    RestartPolicy,
    failure_reason,
    tail,
)


def test_backoff_doubles_then_gives_up_past_the_limit() -> None:
    policy = RestartPolicy(limit=5, window=600, first_delay=1.0)
    decisions = [policy.on_exit(now) for now in (0, 1, 3, 7, 15, 31)]
    assert [d.restart for d in decisions] == [True] * 5 + [False]
    assert [d.delay for d in decisions[:5]] == [1, 2, 4, 8, 16]
    assert [d.exits for d in decisions] == [1, 2, 3, 4, 5, 6]


def test_exits_older_than_the_window_no_longer_count() -> None:
    policy = RestartPolicy(limit=2, window=100, first_delay=1.0)
    assert policy.on_exit(0).restart and policy.on_exit(50).restart
    late = policy.on_exit(101)  # the exit at 0 left the window
    assert late.restart and late.exits == 2 and late.delay == 2
    assert not policy.on_exit(120).restart


def test_a_rare_crash_restarts_at_once_every_time() -> None:
    policy = RestartPolicy(limit=5, window=600, first_delay=1.0)
    for day in range(10):
        decision = policy.on_exit(day * 86400.0)
        assert decision.restart and decision.delay == 1.0 and decision.exits == 1


def test_delay_is_capped_and_reset_starts_a_fresh_window() -> None:
    policy = RestartPolicy(limit=100, window=1e9, first_delay=1.0)
    delays = [policy.on_exit(float(n)).delay for n in range(12)]
    assert max(delays) == MAX_DELAY
    policy.reset()
    assert policy.on_exit(13).delay == 1.0


@pytest.mark.parametrize(("code", "oom", "expected"), [
    (3, False, "exited with code 3"),
    (137, True, "OOM killer"),
    (None, False, "it stopped"),
])
def test_failure_reason_says_what_how_often_and_the_last_words(code: int | None, oom: bool, expected: str) -> None:
    reason = failure_reason(exits=6, window=600, exit_code=code, oom_killed=oom,
                            log_tail="boot\n\nTraceback\n  File x\nValueError: bad model\n")
    assert "6 times within 600s" in reason and expected in reason
    assert reason.endswith("ValueError: bad model")
    assert "wrote no output" in failure_reason(exits=2, window=60, exit_code=1, oom_killed=False, log_tail="")


def test_tail_keeps_the_last_lines_within_bounds() -> None:
    text = "\n".join(f"line {n}" for n in range(100))
    kept = tail(text, lines=3)
    assert kept == "line 97\nline 98\nline 99"
    assert len(tail("x" * 10_000, chars=50)) == 50
