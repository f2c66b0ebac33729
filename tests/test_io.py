"""staged_directory: a directory output is replaced whole on success and untouched on failure."""

from __future__ import annotations

import pytest
from conftest import SCRIPTS  # noqa: F401  (puts the library on sys.path)

from llenergymeasure.io import staged_directory


def test_a_finished_block_replaces_the_target_whole(tmp_path):
    target = tmp_path / "out" / "model"
    target.mkdir(parents=True)
    (target / "old.txt").write_text("old")
    with staged_directory(target) as staging:
        assert staging.parent == target.parent and staging != target
        (staging / "new.txt").write_text("new")
        assert (target / "old.txt").is_file()  # nothing visible until the block ends
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]


def test_a_failed_block_leaves_the_target_and_no_staging(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="build failed"), staged_directory(target) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("build failed")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
