"""What a service's tasks mean to the box, as pure rules (no engine): which task tells the state, and which
tasks a start must wait for."""

from __future__ import annotations

from typing import Any

from molecule_box_swarm.service import leaving_tasks, runs, task_state

from molecule_box.backends.base import WorkloadState


def task(ident: str, state: str, desired: str, created: str = "2026-12-02T06:00:00Z") -> dict[str, Any]:
    return {"ID": ident, "Status": {"State": state}, "DesiredState": desired, "CreatedAt": created}


def test_a_start_waits_only_for_tasks_on_their_way_out_that_still_run() -> None:
    tasks = [task("scaled-down", "running", "remove"), task("updated-away", "starting", "shutdown"),
             task("crashed", "failed", "shutdown"), task("gone", "shutdown", "remove"),
             task("current", "running", "running"), task("coming", "preparing", "running")]
    assert [t["ID"] for t in leaving_tasks(tasks)] == ["scaled-down", "updated-away"]
    assert leaving_tasks([]) == []


def test_a_service_scaled_to_zero_has_every_running_task_on_its_way_out() -> None:
    """The stop's scale-down is in the spec before the orchestrator turns its task's desired state."""
    lagging = task("lagging", "running", "running")
    assert leaving_tasks([lagging]) == []
    assert leaving_tasks([lagging, task("gone", "shutdown", "remove")], scaled_to_zero=True) == [lagging]
    assert leaving_tasks([{**lagging, "NodeID": "dead"}], frozenset({"dead"}), scaled_to_zero=True) == []


def test_a_task_on_a_node_that_is_down_is_not_waited_for() -> None:
    stranded = {**task("stranded", "running", "shutdown"), "NodeID": "dead"}
    assert leaving_tasks([stranded], frozenset({"dead"})) == []
    assert leaving_tasks([stranded], frozenset({"other"})) == [stranded]


def test_the_newest_task_tells_the_state() -> None:
    service = {"Spec": {"Mode": {"Replicated": {"Replicas": 1}}}}
    old = task("old", "running", "running", "2026-12-02T06:00:00Z")
    new = task("new", "failed", "shutdown", "2026-12-02T06:00:05Z")
    assert task_state(service, [old, new])[0] is WorkloadState.STOPPED
    assert task_state(service, [old])[0] is WorkloadState.RUNNING and runs(old)
    # Its node went down: the task last said running, and Swarm shuts it down.
    stranded = task("stranded", "running", "shutdown")
    state, detail = task_state(service, [stranded])
    assert state is WorkloadState.STOPPED and "shuts it down" in str(detail) and not runs(stranded)
    assert task_state(None, [old])[0] is WorkloadState.MISSING
    assert task_state({"Spec": {"Mode": {"Replicated": {"Replicas": 0}}}}, [])[0] is WorkloadState.STOPPED
