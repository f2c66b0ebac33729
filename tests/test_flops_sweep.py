"""Every causal-LM family transformers registers: `llenergymeasure flops` against generate().

Runs tests/flops_sweep.py in one subprocess (tiny configs; see its docstring) and writes the
table to results/test-artifacts/flops_sweep.json. A family whose count is given (exact or
traced) and is more than flops.TOLERANCE off FlopCounterMode on generate() fails the test;
refusing (`confidence: unsupported`, with a reason) is allowed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "workflow" / "scripts"))

from llenergymeasure import flops  # noqa: E402


def test_every_registered_causal_lm_family_is_exact_traced_or_refused(tmp_path) -> None:
    out = tmp_path / "sweep.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "workflow" / "scripts"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "flops_sweep.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    print(done.stdout)  # the table, in pytest -rA output
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = json.loads(out.read_text())
    artifact = REPO_ROOT / "results" / "test-artifacts" / "flops_sweep.json"
    artifact.parent.mkdir(parents=True, exist_ok=True)
    artifact.write_text(out.read_text())
    rows = sweep["rows"]
    wrong = [r for r in rows if r["outcome"] in ("exact", "traced") and abs(r["error"]) > flops.TOLERANCE]
    assert not wrong, "counted but off by more than 0.01 %: " + ", ".join(
        f"{r['family']} {r['error']:+.3%}" for r in wrong
    )
    assert sweep["counts"].get("exact", 0) >= 40, sweep["counts"]  # the named families and most others
    assert all(r["reason"] for r in rows if r["outcome"] in ("refused", "skipped", "traced"))
