"""Restart back-off: the kubelet's doubling delay, with a shorter base and cap for a dev cluster.

The kubelet waits 10 s, 20 s, 40 s ... up to 5 minutes between restarts of a crashing container and
forgets the streak after the container ran for 10 minutes. The dev cluster keeps the shape but
starts at ``base`` (1 s) and caps at ``cap`` (30 s), so a crash loop is visible in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    base: float = 1.0
    cap: float = 30.0
    reset_after: float = 120.0

    def delay(self, streak: int) -> float:
        """Seconds to wait before restart number ``streak`` (0 = the first restart) of a crash streak."""
        if streak < 0:
            raise ValueError("streak must be >= 0")
        return float(min(self.cap, self.base * (2 ** min(streak, 30))))

    def next_streak(self, streak: int, ran_for: float) -> int:
        """The streak after an exit: a container that ran long enough starts afresh."""
        return 0 if ran_for >= self.reset_after else streak + 1


def should_restart(policy: str, exit_code: int) -> bool:
    """``restartPolicy`` semantics: Always restarts, OnFailure only after a non-zero exit, Never not."""
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return exit_code != 0
    return False
