"""What several benchmarks share (imported as `_common`: a benchmark runs with this folder on its path)."""

from __future__ import annotations

import json


def report(summary: dict, path: str | None, saved: dict | None = None):
    """Print a benchmark's summary as JSON, and write it (or `saved`, a fuller record) to `path` if one is given."""
    print(json.dumps(summary, indent=1))
    if path:
        with open(path, "w") as f:
            json.dump(summary if saved is None else saved, f, indent=1)
