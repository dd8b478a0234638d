from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cyclecmda.cli import main
from cyclecmda.config import load_config
from cyclecmda.export.artifact import PaddedNetwork
from cyclecmda.export.write import ExportError, export_checkpoint
from cyclecmda.method.cyclegan import build_network

SIZES = [(32, 32), (37, 45), (20, 28), (9, 14), (5, 6)]  # multiples of 4 and not, and below the smallest size

STANDALONE = r"""
import json, sys, warnings
import numpy as np
import onnxruntime as ort
import torch

warnings.simplefilter("error")  # any warning, a deprecation notice included, fails the script
folder, inputs, out = sys.argv[1], sys.argv[2], sys.argv[3]
meta = json.load(open(f"{folder}/meta.json"))
net = torch.export.load(f"{folder}/{meta['files']['pt2']}").module()
sess = ort.InferenceSession(f"{folder}/{meta['files']['onnx']}", providers=["CPUExecutionProvider"])
weights = torch.load(f"{folder}/{meta['files']['weights']}", weights_only=True)
results = {}
for name, x in np.load(inputs).items():
    with torch.no_grad():
        results["pt2_" + name] = net(torch.from_numpy(x)).numpy()
    results["onnx_" + name] = sess.run(None, {"image": x})[0]
results["n_weights"] = np.array(len(weights))
assert "cyclecmda" not in sys.modules, "the artifact must load without the package"
np.savez(out, **results)
print(meta["direction"], meta["input"]["channels"], meta["output"]["channels"])
"""


def eager_translator(checkpoint: Path, name: str) -> PaddedNetwork:
    ckpt = torch.load(checkpoint, weights_only=True)
    gen = build_network(ckpt["networks"][name])
    gen.load_state_dict(ckpt["state"][name])
    return PaddedNetwork(gen.eval(), gen.size_multiple).eval()


def test_export_writes_self_describing_artifacts(exported):
    checkpoint = exported.parent / "run" / "latest.pt"
    for direction, (cin, cout, bits_in, bits_out) in {"a2b": (3, 1, 8, 16), "b2a": (1, 3, 16, 8)}.items():
        folder = exported / direction
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["direction"] == direction and meta["format"] == "cyclecmda.export"
        assert (meta["input"]["channels"], meta["output"]["channels"]) == (cin, cout)
        assert (meta["input"]["bit_depth"], meta["output"]["bit_depth"]) == (bits_in, bits_out)
        b_side = meta["output"] if direction == "a2b" else meta["input"]
        assert b_side["value_range"] == [1000.0, 60000.0]
        assert meta["size_multiple"] == 4 and meta["network"]["name"] == "resnet_2blocks"
        assert meta["package_version"] and meta["config"]["data"]["b"]["bit_depth"] == 16
        assert meta["checkpoint"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
        assert {"pt2", "torchscript", "onnx", "weights"} <= set(meta["files"])
        assert meta["min_input_size"] == meta["onnx_min_input_size"] == 8  # two positions after two halvings
        for f in meta["files"].values():
            assert (folder / f).is_file()
        assert load_config([], []).data.a.channels == 3  # the config section is plain data


@pytest.mark.parametrize("direction", ["a2b", "b2a"])
def test_artifact_runs_in_a_fresh_process_without_the_package_and_matches_eager(exported, direction, tmp_path):
    """model.pt2 (torch.export.load) and model.onnx (ONNX Runtime) at the sizes they take (multiples
    of size_multiple from min_input_size on), with no warning at all, equal to the eager generator."""
    folder = exported / direction
    meta = json.loads((folder / "meta.json").read_text())
    rng = np.random.default_rng(0)
    m, smallest = meta["size_multiple"], meta["min_input_size"]
    sizes = [(smallest, smallest), (3 * m, 5 * m), (8 * m, 8 * m), (11 * m, 6 * m)]
    inputs = {f"s{h}x{w}": rng.uniform(-1, 1, (b, meta["input"]["channels"], h, w)).astype(np.float32)
              for b, (h, w) in zip((1, 2, 3, 1), sizes)}
    np.savez(tmp_path / "inputs.npz", **inputs)
    script = tmp_path / "standalone.py"
    script.write_text(STANDALONE)
    proc = subprocess.run([sys.executable, "-I", str(script), str(folder), str(tmp_path / "inputs.npz"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "deprecat" not in proc.stderr.lower()
    got = np.load(tmp_path / "out.npz")
    eager = eager_translator(exported.parent / "run" / "latest.pt", "gen_ab" if direction == "a2b" else "gen_ba")
    for name, x in inputs.items():
        with torch.no_grad():
            ref = eager.net(torch.from_numpy(x)).numpy()
        assert ref.shape == (len(x), meta["output"]["channels"], *x.shape[2:])
        np.testing.assert_allclose(got["pt2_" + name], ref, atol=1e-5, rtol=0)
        np.testing.assert_allclose(got["onnx_" + name], ref, atol=1e-4, rtol=0)
    assert int(got["n_weights"]) > 0


@pytest.mark.parametrize("direction", ["a2b", "b2a"])
def test_loaders_take_any_size_from_every_format_and_match_eager(exported, direction, tmp_path):
    """Through the package's loader, model.pt2 (the default) and the legacy model.ts both take
    any size (padded as in training and cropped back) and equal the eager translator."""
    import shutil

    from cyclecmda.export.artifact import TranslatorArtifact

    folder = exported / direction
    legacy = tmp_path / "legacy"  # an artifact exported before model.pt2 existed: model.ts only
    shutil.copytree(folder, legacy)
    meta = json.loads((legacy / "meta.json").read_text())
    for key in ("pt2", "onnx"):
        (legacy / meta["files"].pop(key)).unlink()
    del meta["min_input_size"]
    (legacy / "meta.json").write_text(json.dumps(meta))
    eager = eager_translator(exported.parent / "run" / "latest.pt", "gen_ab" if direction == "a2b" else "gen_ba")
    channels = meta["input"]["channels"]
    for path, kind in ((folder, "pt2"), (legacy, "torchscript")):
        artifact = TranslatorArtifact(path)
        assert artifact.format == kind
        for h, w in SIZES:
            x = torch.rand(2, channels, h, w) * 2 - 1
            with torch.no_grad():
                ref = eager(x)
            torch.testing.assert_close(artifact(x), ref, atol=1e-5, rtol=0)


def test_padding_keeps_multiples_unchanged_and_crops_back(exported):
    eager = eager_translator(exported.parent / "run" / "latest.pt", "gen_ab")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(eager(x), eager.net(x))
        assert eager(torch.rand(1, 3, 5, 6)).shape == (1, 1, 5, 6)


def test_export_cli_and_errors(exported, tmp_path, capsys):
    checkpoint = exported.parent / "run" / "latest.pt"
    assert main(["export", str(checkpoint), "-o", str(tmp_path / "out"), "--direction", "b2a"]) == 0
    assert "exported" in capsys.readouterr().out
    assert (tmp_path / "out" / "b2a" / "model.pt2").is_file() and not (tmp_path / "out" / "a2b").exists()
    assert not (tmp_path / "out" / "b2a" / "model.ts").exists()  # TorchScript only on request
    assert main(["export", str(checkpoint), "-o", str(tmp_path / "legacy"), "--format", "torchscript"]) == 0
    assert (tmp_path / "legacy" / "a2b" / "model.ts").is_file() and not (tmp_path / "legacy" / "a2b" / "model.pt2").exists()
    with pytest.raises(ExportError, match="unknown export format 'coreml'"):
        export_checkpoint(checkpoint, tmp_path / "x", formats=("coreml",))
    assert main(["export", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "y")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_export_on_finish(tiny_config):
    from dataclasses import replace

    from cyclecmda.train.trainer import train

    cfg = replace(tiny_config, train=replace(tiny_config.train, export_on_finish=True))
    result = train(cfg)
    for direction in ("a2b", "b2a"):
        meta = json.loads((result.run_dir / "export" / direction / "meta.json").read_text())
        assert meta["checkpoint"]["step"] == 2 and (result.run_dir / "export" / direction / "model.pt2").is_file()
    # resumed and trained further, the run replaces its own export when it finishes again
    longer = replace(cfg, train=replace(cfg.train, max_steps=3, resume="auto"))
    again = train(longer)
    assert again.step == 3 and not again.interrupted
    meta = json.loads((again.run_dir / "export" / "a2b" / "meta.json").read_text())
    assert meta["checkpoint"]["step"] == 3


def test_a_failed_export_leaves_nothing_behind_and_keeps_the_previous_one(exported, tmp_path, monkeypatch):
    import cyclecmda.export.write as export

    checkpoint = exported.parent / "run" / "latest.pt"
    out = tmp_path / "out"
    export_checkpoint(checkpoint, out, directions=("a2b",))
    before = {p.name: p.read_bytes() for p in (out / "a2b").iterdir()}

    def no_onnx(*args, **kwargs):
        raise ExportError("ONNX export needs the 'onnx' and 'onnxscript' packages")

    monkeypatch.setattr(export, "_save_onnx", no_onnx)
    for target in (tmp_path / "fresh", out):
        with pytest.raises(ExportError, match="ONNX"):
            export_checkpoint(checkpoint, target, formats=("pt2", "onnx"), overwrite=True)
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == []  # no half-written artifact
    assert sorted(p.name for p in out.iterdir()) == ["a2b"]
    assert {p.name: p.read_bytes() for p in (out / "a2b").iterdir()} == before
    # an export that succeeds replaces the previous one whole
    monkeypatch.undo()
    export_checkpoint(checkpoint, out, directions=("a2b",), formats=("pt2", "onnx"), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["a2b"]
    assert {"model.onnx", "model.pt2", "meta.json", "weights.pt"} <= {p.name for p in (out / "a2b").iterdir()}


def test_export_of_a_missing_checkpoint_creates_no_folder(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "new" / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_no_default_path_prints_a_deprecation_warning(exported, tmp_path):
    """Export, the albumentations and torchvision transforms, translate and evaluate, each on the
    default artifact: not one DeprecationWarning or FutureWarning (torch.jit.load printed one)."""
    import warnings

    import albumentations as A
    from helpers import make_images
    from torchvision.transforms import v2

    from cyclecmda.augment import CycleGANTranslate, CycleGANTranslateV2
    from cyclecmda.evaluate.translator import evaluate
    from cyclecmda.export.translate import translate_folder

    make_images(tmp_path / "a", 2, 3, np.uint8)
    make_images(tmp_path / "b", 2, 1, np.uint16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folder = export_checkpoint(exported.parent / "run" / "latest.pt", tmp_path / "export")[0]
        image = np.random.default_rng(0).integers(0, 256, (40, 44, 3), dtype=np.uint8)
        out = A.Compose([CycleGANTranslate(str(folder), p=1.0)])(image=image, mask=np.zeros((40, 44), np.uint8))
        v2.Compose([CycleGANTranslateV2(str(folder), p=1.0)])(torch.from_numpy(image).permute(2, 0, 1))
        translate_folder(folder, tmp_path / "a", tmp_path / "out", progress=False)
        metrics = evaluate(folder, str(tmp_path / "a"), str(tmp_path / "b"))
    assert out["image"].shape == image.shape and metrics
    notices = [f"{w.category.__name__}: {w.message} ({w.filename})" for w in caught
               if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert not notices, notices


def test_export_refuses_to_replace_an_existing_artifact_unless_overwrite(exported, tmp_path, capsys):
    checkpoint = exported.parent / "run" / "latest.pt"
    out = tmp_path / "out"
    assert main(["export", str(checkpoint), "-o", str(out), "--direction", "b2a"]) == 0
    capsys.readouterr()
    before = {p: p.read_bytes() for p in (out / "b2a").iterdir()}
    assert main(["export", str(checkpoint), "-o", str(out), "--direction", "b2a"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert str(out / "b2a") in err and "--overwrite" in err, err
    assert {p: p.read_bytes() for p in (out / "b2a").iterdir()} == before
    with pytest.raises(ExportError, match=r"b2a.*--overwrite"):
        export_checkpoint(checkpoint, out, ("b2a",))
    # a network file left without its meta.json is an artifact in the way too
    (out / "a2b").mkdir()
    (out / "a2b" / "model.onnx").write_bytes(b"an earlier export")
    with pytest.raises(ExportError, match=r"model\.onnx.*--overwrite"):
        export_checkpoint(checkpoint, out, ("a2b",))
    assert (out / "a2b" / "model.onnx").read_bytes() == b"an earlier export"
    # another direction beside it is not in the way; --overwrite replaces
    assert export_checkpoint(checkpoint, tmp_path / "other", ("a2b",)) == [tmp_path / "other" / "a2b"]
    assert main(["export", str(checkpoint), "-o", str(out), "--direction", "b2a", "--overwrite"]) == 0
    assert export_checkpoint(checkpoint, out, ("a2b",), overwrite=True) == [out / "a2b"]
    assert json.loads((out / "a2b" / "meta.json").read_text())["direction"] == "a2b"
