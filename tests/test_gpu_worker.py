"""benchmarks/gpu_worker.py, prepared for a lent GPU machine, runs to its end (here on the CPU,
tiny): a broken script would waste that machine's minutes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_worker.py"


def test_the_gpu_worker_benchmark_runs_to_its_end_on_the_cpu():
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--size", "32", "--images", "2", "--depths", "1", "2",
               "--encoders", "1", "--threads", "1", "--call-images", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"context coder engine: (compiled kernels|constriction)", out)
    assert "largest difference 0.0e+00" in out  # the CPU's MS-SSIM against itself
    rows = [line for line in out.splitlines() if re.match(r"\s+[12] \|", line)]
    assert len(rows) == 2 and all(line.count("MP/s") == 6 for line in rows)  # 3 setups x seq / ovl
    assert re.search(r"decode at depth 2: seq [\d.]+ MP/s .*, ovl [\d.]+ MP/s", out)
    assert re.search(r"depth 2, the best with coder and MS-SSIM: [\d.]+ MP/s", out)
