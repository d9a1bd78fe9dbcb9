"""The scenario clock the demo and its hubs run on (commonsky/clock.py), so `--speed`
compresses every kind of time."""

from commonsky.clock import ScenarioClock

__all__ = ["ScenarioClock"]
