"""`flower-supernode` with a shorter idle poll: a node asks the SuperLink for work every IDLE seconds, not 3.

A Flower 1.42 SuperNode that finds no message sleeps a hard-coded 3 s before asking again
(`flwr.supernode.start_client_internal`, its main loop). A node asks right after sending its reply,
before the server has integrated the round, so every round of a deployment waits 1.5-3 s for it: on
loopback (README, Flower benchmark) that was most of the per-round overhead left once the executor is
warm. This wrapper runs Flower's own SuperNode command unchanged except for that one sleep, which it
takes from $FEDVIT_FLOWER_IDLE_POLL (seconds). Any other sleep is Flower's. If the pinned Flower no
longer has that loop, it says so and runs unchanged.

    FEDVIT_FLOWER_IDLE_POLL=0.2 python -m fedvit_flower.supernode --insecure --superlink ... (flower-supernode's flags)
"""

from __future__ import annotations

import inspect
import os
import sys
import time

FLOWER_IDLE_SLEEP = 3  # the literal in flwr 1.42.0's start_client_internal: `time.sleep(3)`


class _Clock:
    """Stand-in for the `time` module inside start_client_internal: only its idle sleep is changed."""

    def __init__(self, idle: float) -> None:
        self.idle = idle

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        """Flower's idle sleep becomes `idle`; every other sleep is left as it is."""
        time.sleep(self.idle if seconds == FLOWER_IDLE_SLEEP else seconds)


def patch(idle: float) -> bool:
    """Shorten the SuperNode's idle poll to `idle` seconds; False (unchanged) if Flower's loop is not there."""
    import flwr.supernode.start_client_internal as loop

    if f"time.sleep({FLOWER_IDLE_SLEEP})" not in inspect.getsource(loop) or loop.time is not time:
        print(f"[fedvit] this Flower's SuperNode has no `time.sleep({FLOWER_IDLE_SLEEP})` idle poll: running it "
              f"unchanged", file=sys.stderr)
        return False
    loop.time = _Clock(idle)
    return True


def main() -> None:
    """Run flower-supernode with the command line given, its idle poll from $FEDVIT_FLOWER_IDLE_POLL."""
    idle = float(os.environ.get("FEDVIT_FLOWER_IDLE_POLL", FLOWER_IDLE_SLEEP))
    if idle != FLOWER_IDLE_SLEEP:
        patch(idle)
    from flwr.supernode.cli.flower_supernode import flower_supernode

    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
