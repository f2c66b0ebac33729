"""Where the repository is: the one definition of `REPO_ROOT`, imported by every module that
resolves a shipped file (schemas, config, texts, the hardware table), and `repo_path`, which
resolves a path a config names and refuses one outside the repository.

The package is workflow/scripts/llenergymeasure/; the repository root is three parents up.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[3]


def repo_path(path: str, field: str, root: Path = REPO_ROOT) -> Path:
    """Resolve a config path inside the repository; refuse paths that escape it."""
    candidate = Path(path)
    resolved = (root / candidate).resolve() if not candidate.is_absolute() else candidate.resolve()
    try:
        resolved.relative_to(root.resolve())
    except ValueError:
        raise ConfigError(
            f"{field}: {path!r} points outside the repository; use a path inside it such as config/models/<name>.json"
        ) from None
    return resolved
