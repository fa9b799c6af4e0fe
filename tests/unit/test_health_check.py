"""The periodic health check both state machines use (replicas and proxies): one in flight,
the next a period after an answer, and the three outcomes."""

from __future__ import annotations

from serve._control.health import HealthCheck, Outcome

from .test_deployment_state import FakeHandle, FakePending


def _sender(sent: list[FakePending]):
    def send() -> FakePending:
        sent.append(FakePending(FakeHandle("r", "v1"), "check_health", ()))
        return sent[-1]
    return send


def test_one_check_in_flight_and_the_next_a_period_after_its_answer() -> None:
    check, sent = HealthCheck(next_at=1.0), []
    assert check.poll(0.5, _sender(sent), 10.0, 30.0) is None and sent == []  # not due yet
    assert check.poll(1.0, _sender(sent), 10.0, 30.0) is None and len(sent) == 1
    assert check.poll(5.0, _sender(sent), 10.0, 30.0) is None and len(sent) == 1  # still in flight: no second
    assert check.unanswered_for(5.0) == 4.0
    sent[0].succeed(True)
    assert check.poll(6.0, _sender(sent), 10.0, 30.0) == (Outcome.ANSWERED, None)
    assert check.unanswered_for(6.0) == 0.0 and check.next_at == 16.0
    assert check.poll(15.9, _sender(sent), 10.0, 30.0) is None and len(sent) == 1
    assert check.poll(16.0, _sender(sent), 10.0, 30.0) is None and len(sent) == 2


def test_a_failed_check_gives_its_error_and_an_unanswered_one_is_late_past_the_timeout() -> None:
    check, sent = HealthCheck(), []
    check.poll(0.0, _sender(sent), 1.0, 3.0)
    error = RuntimeError("unhealthy")
    sent[0].fail(error)
    assert check.poll(0.5, _sender(sent), 1.0, 3.0) == (Outcome.FAILED, error)
    check.poll(1.5, _sender(sent), 1.0, 3.0)
    assert check.poll(4.5, _sender(sent), 1.0, 3.0) is None  # 3 s: not past the timeout yet
    assert check.poll(4.6, _sender(sent), 1.0, 3.0) == (Outcome.LATE, None)
    assert check.pending is None and check.unanswered_for(5.0) == 0.0
