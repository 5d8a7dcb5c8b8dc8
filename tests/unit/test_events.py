"""Run state built from ansible-runner events, and the reports made from it."""

from __future__ import annotations

import queue
import threading
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

from tflab_provision.events import Event, RunProgress, consume, failure_message
from tflab_provision.report import ExitCode, RunResult, junit_xml


def ev(kind: str, **data: object) -> dict[str, object]:
    return {"event": kind, "event_data": data}


def test_progress_counts_results_failures_and_batches() -> None:
    p = RunProgress()
    for event in [
        ev("playbook_on_play_start", play="Provision"),
        ev("runner_on_start", host="a", task="Install"),
        ev("runner_on_ok", host="a", task="Install", res={"changed": True}),
        ev("runner_on_failed", host="a", task="Probe", ignore_errors=True, res={"msg": "x"}),
        ev("playbook_on_play_start", play="Provision"),
        ev("runner_on_failed", host="b", task="Install", res={"msg": "E: Unable to locate package"}),
        ev("runner_on_unreachable", host="c", task="Gathering Facts",
           res={"msg": "ssh: connect to host 10.0.0.3 port 22: Connection refused"}),
    ]:
        p.apply(event)
    assert (p.hosts["a"].ok, p.hosts["a"].changed, p.hosts["a"].ignored) == (1, 1, 1)
    assert p.hosts["b"].failed == 1 and p.hosts["c"].unreachable == 1
    assert [(f.host, f.task, f.unreachable) for f in p.failures] == [
        ("b", "Install", False), ("c", "Gathering Facts", True)]
    assert p.batches == [["a"], ["b", "c"]]


def test_stats_event_is_authoritative() -> None:
    p = RunProgress()
    p.apply(ev("runner_on_ok", host="a", task="t", res={}))
    p.apply(ev("playbook_on_stats", ok={"a": 5}, changed={"a": 2}, failures={}, dark={"b": 1},
               skipped={"a": 1}))
    assert (p.hosts["a"].ok, p.hosts["a"].changed, p.hosts["a"].skipped) == (5, 2, 1)
    assert p.hosts["b"].unreachable == 1


def test_failure_message_prefers_msg_then_first_failed_item() -> None:
    assert failure_message({"msg": "boom", "stderr": "x"}) == "boom"
    assert failure_message({"results": [{"failed": False}, {"failed": True, "stderr": "bad"}]}) == "bad"
    assert failure_message({}) == "task failed (no message)"


def test_junit_has_a_suite_per_host_and_a_failure_per_failed_task() -> None:
    p = RunProgress()
    p.apply(ev("runner_on_ok", host="a", task="t", res={}))
    p.apply(ev("runner_on_failed", host="b", task="Install driver", res={"msg": "no space"}))
    result = RunResult(playbook="site.yml", status="failed", exit_code=ExitCode.TASK_FAILED,
                       started_at=datetime.now(timezone.utc), duration_s=1.0,
                       private_data_dir="/tmp/x", hosts=p.hosts, failures=p.failures)
    root = ET.fromstring(junit_xml(result))
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"a", "b"}
    assert suites["a"].get("failures") == "0"
    failure = suites["b"].find("testcase/failure")
    assert failure is not None and failure.get("message") == "no space"


def test_retries_are_recorded_with_their_attempt_even_when_the_task_then_passes() -> None:
    p = RunProgress()
    p.apply(ev("runner_retry", host="a", task="Install | Install the packages",
               res={"attempts": 1, "retries": 4, "failed": True,
                    "msg": "Failed to fetch http://deb.debian.org/debian/pool/main/r/requests.deb"}))
    p.apply(ev("runner_on_ok", host="a", task="Install | Install the packages", res={"changed": True}))
    [retry] = p.retries
    assert (retry.host, retry.attempt, retry.attempts) == ("a", 1, 4)
    assert "Failed to fetch" in retry.message
    assert p.failures == [] and p.hosts["a"].ok == 1


def test_known_failures_get_a_hint_and_unknown_ones_none() -> None:
    p = RunProgress()
    p.apply(ev("runner_on_failed", host="a", task="Workspace | Read the container", res={
        "msg": "Error connecting: Error while fetching server API version: ('Connection aborted.', "
               "FileNotFoundError(2, 'No such file or directory'))"}))
    p.apply(ev("runner_on_failed", host="b", task="Break", res={"msg": "deliberate failure on b"}))
    hint_a, hint_b = (f.hint for f in p.failures)
    assert hint_a is not None and "Docker daemon" in hint_a and "systemctl status docker" in hint_a
    assert hint_b is None


def test_only_events_that_say_something_are_written_to_job_events() -> None:
    from tflab_provision.events import worth_writing

    assert not worth_writing(ev("runner_on_start", host="a", task="t"))
    assert not worth_writing(ev("runner_on_ok", host="a", task="t", res={"changed": False}))
    assert not worth_writing(ev("runner_on_skipped", host="a", task="t"))
    for kept in (ev("runner_on_ok", host="a", task="t", res={"changed": True}),
                 ev("runner_on_failed", host="a", task="t", res={"msg": "x"}),
                 ev("runner_retry", host="a", task="t", res={"attempts": 1}),
                 ev("runner_on_unreachable", host="a", task="t", res={}),
                 ev("playbook_on_task_start", task="t"), ev("playbook_on_stats")):
        assert worth_writing(kept)
    assert worth_writing(ev("runner_on_start", host="a", task="t"), verbosity=1)


def test_a_no_log_change_is_counted_and_named_though_its_result_is_censored() -> None:
    # What ansible-runner sends for a changed no_log task: the result is censored to one key, the
    # printed line still says "changed" (e.g. tf_workspace's token file in `tflab plan`).
    censored = {"censored": "the output has been hidden due to the fact that 'no_log: true' was specified"}
    p = RunProgress()
    p.apply({"event": "runner_on_ok", "stdout": "\x1b[0;33mchanged: [a]\x1b[0m",
             "event_data": {"host": "a", "task": "Write the token", "res": censored}})
    p.apply({"event": "runner_on_ok", "stdout": "\x1b[0;32mok: [a]\x1b[0m",
             "event_data": {"host": "a", "task": "Read the token", "res": censored}})
    assert p.hosts["a"].changed == 1
    assert p.changes == {"a": ["Write the token"]}


def test_the_consumer_stops_at_the_end_marker_though_the_producer_still_runs() -> None:
    """ansible-runner's thread outlives its finished callback by a moment: the marker, not a
    poll of the thread, ends the wait (the poll would cost up to poll_s on every run)."""
    events: queue.Queue[Event | None] = queue.Queue()
    updates: list[int] = []
    for event in (ev("runner_on_ok", host="a", task="t", res={}), None):
        events.put(event)
    p = RunProgress()
    polls: list[bool] = []

    def alive() -> bool:  # asked only when a poll came back empty; dead then, so a miss cannot hang
        polls.append(False)
        return False

    consume(events, p, alive, lambda progress: updates.append(progress.hosts["a"].ok), poll_s=0.01)
    assert p.hosts["a"].ok == 1 and updates == [1]
    assert polls == [], "the consumer waited for a poll although the end marker was queued"


def test_the_consumer_applies_what_a_dead_producer_queued_and_stops() -> None:
    events: queue.Queue[Event | None] = queue.Queue()
    p = RunProgress()

    def producer() -> None:  # dies without the marker, as ansible-runner's thread would on an error
        events.put(ev("runner_on_ok", host="a", task="t", res={}))
        events.put(ev("runner_on_failed", host="a", task="u", res={"msg": "boom"}))

    thread = threading.Thread(target=producer)
    thread.start()
    thread.join()
    consume(events, p, thread.is_alive, poll_s=0.01)
    assert (p.hosts["a"].ok, p.hosts["a"].failed) == (1, 1) and events.empty()
