"""The process-level helpers of finsent.runtime, each in a fresh interpreter (they change the collector's state)."""

from __future__ import annotations

import json
import subprocess
import sys

PAUSED = """
import gc, json
from finsent.runtime import collector_paused
seen = {}
with collector_paused():
    seen["on_inside"] = gc.isenabled()
    made_inside = [[i] for i in range(1000)]
seen["on_after"] = gc.isenabled()
seen["frozen"] = gc.get_freeze_count()
gc.disable()
with collector_paused():
    pass
seen["off_stays_off"] = not gc.isenabled()
print(json.dumps(seen))
"""


def test_the_collector_is_off_while_paused_then_on_with_what_was_made_frozen():
    done = subprocess.run([sys.executable, "-c", PAUSED], capture_output=True, text=True, check=True)
    seen = json.loads(done.stdout)
    assert seen["on_inside"] is False and seen["on_after"] is True
    assert seen["frozen"] >= 1000  # the lists made inside, at least
    assert seen["off_stays_off"] is True  # a caller that had switched it off keeps it off
