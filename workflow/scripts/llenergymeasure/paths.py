"""Where the repository is: the one definition of `REPO_ROOT`, imported by every module that
resolves a shipped file (schemas, config, texts, the hardware table).

The package is workflow/scripts/llenergymeasure/; the repository root is three parents up.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
