"""Test-session settings shared by tests/ and the nbval run of notebooks/.

Run folders go to a fresh temporary directory (FEDVIT_RUNS), set before any notebook kernel starts,
so tests never read stale results or touch runs/ of real studies.
"""

import os
import tempfile

os.environ.setdefault("FEDVIT_RUNS", tempfile.mkdtemp(prefix="fedvit-test-runs-"))
os.environ.setdefault("MPLBACKEND", "Agg")
