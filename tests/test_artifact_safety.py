"""Files that are not what a command expects, and artifacts that point outside their folder."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import zipfile
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from helpers import make_images

from cyclecmda.augment import CycleGANTranslate
from cyclecmda.cli import main
from cyclecmda.evaluate.translator import load_translators
from cyclecmda.export.artifact import ArtifactError, TranslatorArtifact
from cyclecmda.train.checkpoint import CheckpointError, load_checkpoint


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


# --- what a model.pt2 may hold ------------------------------------------------------------------


class MarkerObject:
    """Unpickling this creates ``marker``: the proof that loading ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickled(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save(MarkerObject(marker), buffer)
    return buffer.getvalue()


def rewrite_pt2(src: Path, dst: Path, edit) -> None:
    """Copy a .pt2 archive, entries renamed by their path below the archive's top folder."""
    with zipfile.ZipFile(src) as archive:
        root = archive.namelist()[0].split("/", 1)[0]
        entries = {info.filename.split("/", 1)[1]: archive.read(info) for info in archive.infolist()}
    edit(entries)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as archive:
        for name, data in entries.items():
            archive.writestr(f"{root}/{name}", data)


def pickled_weight(entries, marker):
    config = json.loads(entries["data/weights/model_weights_config.json"])
    _, payload = next(iter(config["config"].items()))
    payload["use_pickle"] = True
    entries["data/weights/model_weights_config.json"] = json.dumps(config).encode()
    entries[f"data/weights/{payload['path_name']}"] = pickled(marker)


def pickled_constant(entries, marker):
    config = {"config": {"evil": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
                                  "tensor_meta": None}}}
    entries["data/constants/model_constants_config.json"] = json.dumps(config).encode()
    entries["data/constants/opaque_obj_0"] = pickled(marker)


def pickled_inputs(entries, marker):
    entries["data/sample_inputs/model.pt"] = pickled(marker)


def legacy_weights(entries, marker):
    entries["data/weights/model.pt"] = pickled(marker)


def compiled_code(entries, marker):
    entries["data/aotinductor/model/model.so"] = b"\x7fELF"


@pytest.mark.parametrize("edit", [pickled_weight, pickled_constant, pickled_inputs, legacy_weights, compiled_code])
def test_a_pt2_that_would_unpickle_or_run_code_is_refused_unloaded(exported, tmp_path, capsys, edit):
    marker = tmp_path / "code-ran"
    folder = tmp_path / "art"
    shutil.copytree(exported, folder)
    rewrite_pt2(exported / "a2b" / "model.pt2", folder / "a2b" / "model.pt2", lambda e: edit(e, marker))
    make_images(tmp_path / "a", 2, 3, np.uint8)
    make_images(tmp_path / "b", 2, 1, np.uint16)
    for argv in (["translate", str(folder / "a2b"), str(tmp_path / "a"), str(tmp_path / "out")],
                 ["evaluate", str(folder / "a2b"), "--a", str(tmp_path / "a"), "--b", str(tmp_path / "b"),
                  "--features", "none"]):
        err = one_line_error(capsys, argv)
        assert str(folder / "a2b" / "model.pt2") in err and "was not loaded" in err, err
        assert "Python object" in err or "compiled code" in err, err
    transform = A.Compose([CycleGANTranslate(folder / "a2b")])
    with pytest.raises(ArtifactError, match="was not loaded"):
        transform(image=np.zeros((32, 32, 3), np.uint8))
    assert not marker.exists(), "loading the artifact ran code from it"


def test_the_refused_archive_is_not_reread_between_check_and_load(exported, tmp_path, monkeypatch):
    """The archive is checked and loaded from one read: a file swapped in between is never loaded."""
    marker = tmp_path / "code-ran"
    folder = tmp_path / "art"
    shutil.copytree(exported / "a2b", folder)
    evil = tmp_path / "evil.pt2"
    rewrite_pt2(exported / "a2b" / "model.pt2", evil, lambda e: pickled_weight(e, marker))
    import cyclecmda.export.artifact as core

    real = core.read_pt2

    def swap_after_check(file):
        checked = real(file)
        shutil.copyfile(evil, file)  # the file changes after it was checked
        return checked

    monkeypatch.setattr(core, "read_pt2", swap_after_check)
    out = TranslatorArtifact(folder)(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 1, 32, 32) and not marker.exists()


def test_meta_json_that_is_a_link_out_of_the_folder_is_not_read(exported, tmp_path, capsys):
    folder = tmp_path / "art"
    shutil.copytree(exported / "a2b", folder)
    other = tmp_path / "other-meta.json"
    shutil.move(folder / "meta.json", other)
    (folder / "meta.json").symlink_to(other)
    with pytest.raises(ArtifactError, match=r"meta\.json is a symbolic link leading out of the artifact folder"):
        TranslatorArtifact(folder)
    make_images(tmp_path / "a", 2, 3, np.uint8)
    err = one_line_error(capsys, ["translate", str(folder), str(tmp_path / "a"), str(tmp_path / "out")])
    assert "symbolic link" in err and str(folder / "meta.json") in err


def classifier_file(path: Path) -> Path:
    """A classifier of 1-channel images (4 class logits) exported to `path` (.pt2 or .onnx), as a
    task network's model file is."""
    from torch.export import Dim

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    program = torch.export.export(net.eval(), (torch.zeros(2, 1, 32, 32),),
                                  dynamic_shapes=({0: Dim("b", max=64), 2: Dim("h", min=2, max=512),
                                                   3: Dim("w", min=2, max=512)},))
    if path.suffix == ".pt2":
        torch.export.save(program, str(path))
    else:
        torch.onnx.export(program, dynamo=True, f=str(path), external_data=False, verbose=False)
    return path


@pytest.mark.parametrize("network", ["model.pt2", "model.onnx"])
@pytest.mark.parametrize("source", ["b2a", "classifier"])
def test_a_network_file_of_another_network_is_named_on_load(exported, tmp_path, capsys, network, source):
    folder = tmp_path / "art"
    shutil.copytree(exported / "a2b", folder)
    if source == "classifier":
        classifier_file(folder / network)
    else:
        shutil.copyfile(exported / "b2a" / network, folder / network)
    runtime = "onnxruntime" if network == "model.onnx" else "torch"
    with pytest.raises(ArtifactError) as caught:
        TranslatorArtifact(folder, runtime=runtime)(torch.zeros(1, 3, 32, 32))
    message = str(caught.value)
    assert str(folder / network) in message and "meta.json" in message and "another network" in message, message
    assert "\n" not in message
    if runtime == "torch":
        make_images(tmp_path / "a", 2, 3, np.uint8)
        err = one_line_error(capsys, ["translate", str(folder), str(tmp_path / "a"), str(tmp_path / "out")])
        assert "another network" in err and "input" in err


def edit_meta(exported: Path, tmp_path: Path, edit) -> Path:
    folder = tmp_path / "art"
    shutil.copytree(exported / "a2b", folder)
    meta = json.loads((folder / "meta.json").read_text())
    edit(meta)
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize("edit, expected", [
    (lambda m: m.pop("input"), r"the field 'input' is missing"),
    (lambda m: m.update(size_multiple="4"), r"'size_multiple' must be an integer, got '4'"),
    (lambda m: m["input"].update(channels="three"), r"'input\.channels' must be an integer, got 'three'"),
    (lambda m: m["output"].update(channels=True), r"'output\.channels' must be an integer, got True"),
    (lambda m: m.update(format_version=99), r"format_version 99 is not one this cyclecmda reads"),
    (lambda m: m["output"].update(value_range=[5, 5]), r"'output\.value_range' must be \[lo, hi\].*lo < hi, got \[5, 5\]"),
    (lambda m: m["input"].update(value_range=[0, "255"]), r"'input\.value_range' must be \[lo, hi\]"),
    (lambda m: m["input"].update(bit_depth=12), r"'input\.bit_depth' must be 8 or 16, got 12"),
    (lambda m: m.update(files="model.pt2"), r"'files' must be an object"),
    (lambda m: m.update(task={"kind": "boxes", "classes": ["x"]}), r"'task\.kind' must be one of class, mask"),
])
def test_meta_json_is_checked_against_its_schema(exported, tmp_path, capsys, edit, expected):
    folder = edit_meta(exported, tmp_path, edit)
    with pytest.raises(ArtifactError, match=expected) as caught:
        TranslatorArtifact(folder)
    assert str(folder / "meta.json") in str(caught.value) and "\n" not in str(caught.value)
    make_images(tmp_path / "a", 2, 3, np.uint8)
    err = one_line_error(capsys, ["translate", str(folder), str(tmp_path / "a"), str(tmp_path / "out")])
    assert "meta.json" in err


def test_artifact_folders_that_are_not_there_say_so(exported, tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "a2b"
    with pytest.raises(ArtifactError, match=r"a2b' does not exist"):
        TranslatorArtifact(missing)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ArtifactError, match=r"file' is a file, not an artifact folder"):
        TranslatorArtifact(a_file)
    make_images(tmp_path / "a", 2, 3, np.uint8)
    err = one_line_error(capsys, ["translate", str(missing), str(tmp_path / "a"), str(tmp_path / "out")])
    assert "does not exist" in err and "no meta.json" not in err
