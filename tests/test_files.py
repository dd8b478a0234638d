"""Output locations that cannot be written fail first, in one line naming the path and the cause.

Tests run as root, where permissions do not stop a write: an output whose parent is a regular
file (NotADirectoryError) stands in for an unwritable location.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import make_images

import cyclecmda.evaluate.translator
from cyclecmda.cli import main
from cyclecmda.data.images import write_image
from cyclecmda.files import OutputError, ensure_writable_dir


@pytest.fixture
def blocked(tmp_path) -> Path:
    """A regular file: nothing can be created under it."""
    path = tmp_path / "a_file"
    path.write_text("")
    return path


def one_line_error(capsys, argv, path: Path) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert f"cannot write to '{path}" in err, err
    assert "Not a directory" in err or "a file is in the way of the folder" in err, err
    return err


def test_ensure_writable_dir_creates_the_folder_or_names_the_cause(tmp_path, blocked):
    assert ensure_writable_dir(tmp_path / "new" / "deeper", "output folder").is_dir()
    assert not list((tmp_path / "new" / "deeper").iterdir())  # the probe file is gone
    with pytest.raises(OutputError, match=r"cannot write to '.*a_file.*' \(output folder\): Not a directory"):
        ensure_writable_dir(blocked / "out", "output folder")


def test_export_into_an_unwritable_folder(exported, blocked, capsys):
    checkpoint = exported.parent / "run" / "latest.pt"
    one_line_error(capsys, ["export", str(checkpoint), "-o", str(blocked / "out")], blocked)


def test_evaluate_checks_its_output_before_any_work(exported, tmp_path, blocked, capsys, monkeypatch):
    make_images(tmp_path / "a", 2, 3, np.uint8)
    make_images(tmp_path / "b", 2, 1, np.uint16)

    def never(*args, **kwargs):
        raise AssertionError("loaded the translators before checking the output")

    monkeypatch.setattr(cyclecmda.evaluate.translator, "load_translators", never)
    err = one_line_error(capsys, ["evaluate", str(exported), "--a", str(tmp_path / "a"), "--b", str(tmp_path / "b"),
                                  "--features", "none", "--json", str(blocked / "metrics.json")], blocked)
    assert "--json" in err


def test_translate_into_an_unwritable_folder(exported, tmp_path, blocked, capsys):
    make_images(tmp_path / "a", 2, 3, np.uint8)
    one_line_error(capsys, ["translate", str(exported / "a2b"), str(tmp_path / "a"), str(blocked / "out")], blocked)


def test_a_failed_image_write_is_an_output_error(tmp_path, blocked):
    with pytest.raises(OutputError, match="cannot write to .*a_file.*Not a directory"):
        write_image(blocked / "sub" / "x.png", np.zeros((4, 4, 1), np.uint8))
    with pytest.raises(OutputError, match="a_file.*a file is in the way of the folder"):
        ensure_writable_dir(blocked, "output folder")
