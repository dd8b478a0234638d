"""Files that are not what a command expects, and artifacts that point outside their folder."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cyclecmda.augment.core import ArtifactError, TranslatorArtifact
from cyclecmda.checkpoint import CheckpointError, load_checkpoint
from cyclecmda.cli import main
from cyclecmda.evaluate import load_translators
from conftest import make_images


def one_line_error(capsys, argv) -> str:
    """Run the CLI, expect exit 2 and a single 'error: ...' line without torch's advice or a traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err and "weights_only=False" not in err and "weights_only` set to `False" not in err
    return err


# --- checkpoints ------------------------------------------------------------------------------


def test_export_names_what_the_file_is_instead_of_a_checkpoint(exported, tmp_path, capsys):
    png = make_images(tmp_path / "img", 1, 3, np.uint8)[0]
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    config = tmp_path / "config.yaml"
    config.write_text("run:\n  name: mine\ndata:\n  a:\n    root: /data/a\n")
    jpeg = tmp_path / "photo.jpg"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 64)
    random = tmp_path / "noise.pt"
    random.write_bytes(np.random.default_rng(0).integers(0, 256, 512, dtype=np.uint8).tobytes()[1:] + b"\x01")
    expected = {png: "PNG image", empty: "empty", config: "text file", jpeg: "JPEG image", random: "not a PyTorch file"}
    for path, what in expected.items():
        err = one_line_error(capsys, ["export", str(path), "-o", str(tmp_path / "out")])
        assert str(path) in err and what in err and "'cyclecmda train'" in err, err
    err = one_line_error(capsys, ["export", str(tmp_path), "-o", str(tmp_path / "out")])
    assert "folder" in err and str(tmp_path) in err
    # an export's weights.pt holds tensors, but is not a checkpoint
    err = one_line_error(capsys, ["export", str(exported / "a2b" / "weights.pt"), "-o", str(tmp_path / "out")])
    assert "not a cyclecmda checkpoint" in err and "weights.pt" in err


def test_python_objects_in_a_pt_file_are_never_unpickled(tmp_path, capsys):
    pickled = tmp_path / "objects.pt"
    torch.save({"format": "cyclecmda.checkpoint", "args": argparse.Namespace(lr=1.0)}, pickled)
    with pytest.raises(CheckpointError, match=r"objects\.pt.*Python objects beyond tensors.*can run code"):
        load_checkpoint(pickled)
    err = one_line_error(capsys, ["export", str(pickled), "-o", str(tmp_path / "out")])
    assert "objects.pt" in err and "Python objects" in err
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((Path(pickled).read_bytes())[:200])
    err = one_line_error(capsys, ["evaluate", str(truncated), "--a", str(tmp_path), "--b", str(tmp_path),
                                  "--features", "none"])
    assert "truncated.pt" in err and ("damaged" in err or "truncated" in err)


@pytest.mark.parametrize("network", ["model.pt2", "model.ts"])
def test_corrupt_network_is_an_artifact_error_naming_the_file(exported, tmp_path, capsys, network):
    bad = tmp_path / "bad"
    shutil.copytree(exported, bad)
    (bad / "a2b" / network).write_bytes(b"definitely not a zip archive")
    if network == "model.ts":  # a legacy artifact: TorchScript only
        meta = json.loads((bad / "a2b" / "meta.json").read_text())
        meta["files"] = {k: v for k, v in meta["files"].items() if k not in ("pt2", "onnx")}
        (bad / "a2b" / "meta.json").write_text(json.dumps(meta))
    make_images(tmp_path / "a", 2, 3, np.uint8)
    make_images(tmp_path / "b", 2, 1, np.uint16)
    for argv in (["evaluate", str(bad / "a2b"), "--a", str(tmp_path / "a"), "--b", str(tmp_path / "b"),
                  "--features", "none"],
                 ["translate", str(bad / "a2b"), str(tmp_path / "a"), str(tmp_path / "out")]):
        err = one_line_error(capsys, argv)
        assert str(bad / "a2b" / network) in err and "re-export it with 'cyclecmda export'" in err, err


# --- artifact folders -------------------------------------------------------------------------


def moved_network(exported: Path, tmp_path: Path, entry) -> Path:
    """A copy of the a2b artifact whose meta.json names the network as `entry(folder)`."""
    folder = tmp_path / "art" / "a2b"
    shutil.copytree(exported / "a2b", folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta["files"]["pt2"] = entry(folder)
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_meta_json_entries_outside_the_folder_are_refused(exported, tmp_path, capsys, where):
    outside = tmp_path / "elsewhere.pt2"
    shutil.copyfile(exported / "a2b" / "model.pt2", outside)

    def entry(folder: Path) -> str:
        if where == "parent":
            return "../../elsewhere.pt2"
        if where == "absolute":
            return str(outside)
        (folder / "link.pt2").symlink_to(outside)
        return "link.pt2"

    folder = moved_network(exported, tmp_path, entry)
    for load in (TranslatorArtifact, load_translators):
        with pytest.raises(ArtifactError, match=r"files\.pt2.*outside") as caught:
            load(folder)
        assert "\n" not in str(caught.value) and "meta.json" in str(caught.value)
    make_images(tmp_path / "a", 2, 3, np.uint8)
    err = one_line_error(capsys, ["translate", str(folder), str(tmp_path / "a"), str(tmp_path / "out")])
    assert "outside" in err


def test_entries_inside_the_folder_still_load(exported, tmp_path):
    folder = moved_network(exported, tmp_path, lambda f: "./sub/../model.pt2")
    assert TranslatorArtifact(folder).module("cpu") is not None
    translators = load_translators(folder)
    assert set(translators.directions) == {"a2b"}
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "meta.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"meta\.json.*not valid JSON"):
        TranslatorArtifact(broken)
