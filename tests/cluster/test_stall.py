"""cluster/stall.py `Progress`: when a serving core counts as stuck (pure; the whole path,
a core stuck on a database lock, is tests/cluster/test_stuck_core.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from commonsky.cluster.stall import Progress

looks = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.floats(0.0, 5.0)), max_size=40)


@given(looks)
def test_stuck_only_after_stall_s_of_waiting_with_a_still_floor(seen: list) -> None:
    progress = Progress(stall_s=10.0)
    now, still_since = 0.0, None
    for floor, waiting, step in seen:
        now += step
        mark = ("consumer made at t0", floor)
        moved = progress.mark != mark
        got = progress.seen(mark, waiting, now)
        if waiting == 0 or moved:
            still_since = now
        assert still_since is not None
        expected = now - still_since if now - still_since >= 10.0 else None
        assert got == expected


def test_a_still_floor_with_messages_waiting_is_stuck_after_stall_s() -> None:
    progress = Progress(stall_s=10.0)
    assert progress.seen(("c", 5), 3, 100.0) is None
    assert progress.seen(("c", 5), 3, 109.9) is None
    assert progress.seen(("c", 5), 3, 110.0) == 10.0


def test_a_moving_floor_nothing_waiting_or_a_new_consumer_is_not_stuck() -> None:
    progress = Progress(stall_s=10.0)
    assert progress.seen(("c", 5), 3, 0.0) is None
    assert progress.seen(("c", 6), 3, 11.0) is None  # (applied: moved)
    assert progress.seen(("c", 6), 0, 22.0) is None  # (nothing waits: idle)
    assert progress.seen(("c", 6), 3, 30.0) is None  # (waiting again: counted from here)
    assert progress.seen(("d", 6), 3, 45.0) is None  # (a new core's consumer)
    assert progress.seen(("d", 6), 3, 55.0) == 10.0


def test_a_look_without_an_answer_starts_the_count_again() -> None:
    progress = Progress(stall_s=10.0)
    assert progress.seen(("c", 5), 3, 0.0) is None
    progress.unseen()  # (NATS away for a while: the floor could not move)
    assert progress.seen(("c", 5), 3, 60.0) is None
    assert progress.seen(("c", 5), 3, 70.0) == 10.0
