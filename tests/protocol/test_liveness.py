"""When a TAK connection is closed for silence (issue #12 fault 7), on a fake clock."""

from __future__ import annotations

from commonsky.protocol.liveness import Liveness

IDLE, PARTIAL = 120.0, 30.0


def fresh(now: float = 0.0) -> Liveness:
    return Liveness.start(now, IDLE, PARTIAL)


def test_a_silent_client_with_no_traffic_is_closed_as_idle() -> None:
    live = fresh()
    assert live.deadline() == IDLE
    assert live.expired(IDLE - 0.001) is None
    assert live.expired(IDLE) == "idle"


def test_a_stationary_atak_being_sent_traffic_is_never_idle() -> None:
    """It reports every 180 s (longer than the idle timeout) and does not ping while it
    hears traffic; the hub sends it something every 10 s."""
    live = fresh()
    for t in range(0, 3600, 10):
        if t % 180 == 0:
            live.heard(float(t), partial=False, completed=True)
        live.sent(float(t))
        assert live.expired(float(t) + 9.0) is None
    assert live.deadline() == 3590.0 + IDLE


def test_a_dead_peer_whose_socket_stopped_draining_is_closed() -> None:
    live = fresh()
    live.sent(50.0)  # then the socket pushes back: nothing more leaves
    assert live.expired(50.0 + IDLE - 1) is None
    assert live.expired(50.0 + IDLE) == "idle"


def test_a_newline_after_each_event_never_starts_the_partial_clock() -> None:
    live = fresh()
    for t in range(0, 600, 5):
        live.heard(float(t), partial=False, completed=True)  # event + "\n": nothing unfinished
        assert live.partial_since is None and live.expired(float(t) + 4) is None


def test_the_partial_clock_restarts_with_each_message_that_completes() -> None:
    live = fresh()
    # Each read ends one event and begins the next (a client streaming back to back).
    for t in range(0, 300, 5):
        live.heard(float(t), partial=True, completed=True)
        assert live.partial_since == float(t)
        assert live.expired(float(t) + 4) is None


def test_a_sender_stuck_inside_one_event_is_closed_for_it() -> None:
    live = fresh()
    live.heard(10.0, partial=True, completed=False)
    for t in (15.0, 20.0, 25.0, 35.0):  # keeps dribbling bytes of the same event
        live.heard(t, partial=True, completed=False)
    live.sent(38.0)
    assert live.deadline() == 10.0 + PARTIAL
    assert live.expired(39.9) is None
    assert live.expired(40.0) == "partial_event"
    live.heard(40.0, partial=False, completed=True)  # had it finished: no longer partial
    assert live.expired(40.0) is None
