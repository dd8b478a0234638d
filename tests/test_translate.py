from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from helpers import make_images
from torch import nn

from cyclecmda.cli import main
from cyclecmda.data.images import read_image, write_image
from cyclecmda.export.artifact import PaddedNetwork, load_artifact, translate_unit
from cyclecmda.export.translate import TranslateError, edge_window, tile_spans, translate_folder, translate_tiled

BENCH = Path(__file__).parents[1] / "tools" / "benchmarks" / "bench_augment.py"


@pytest.fixture
def artifacts(exported) -> Path:
    """The tiny model (A: RGB 8-bit, B: 1-channel 16-bit) trained 2 steps, exported to pt2, TorchScript
    and ONNX once for the session (read, never written, by these tests)."""
    return exported


def nested_rgb_folder(root: Path) -> List[Path]:
    """8-bit RGB PNGs and JPEGs of three sizes in nested folders, plus a file that is no image."""
    make_images(root, 3, 3, np.uint8, size=40)
    make_images(root / "sub", 2, 3, np.uint8, size=24, ext=".jpg", seed=1)
    make_images(root / "sub" / "deeper", 3, 3, np.uint8, size=33, seed=2)
    (root / "sub" / "notes.txt").write_text("not an image")
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.suffix in (".png", ".jpg"))


def test_folder_keeps_relative_paths_names_and_input_units_and_matches_the_network(artifacts, tmp_path):
    rels = nested_rgb_folder(tmp_path / "src")
    summary = translate_folder(artifacts / "a2b", tmp_path / "src", tmp_path / "out", batch_size=2, units="input",
                               progress=False)
    assert (summary["translated"], summary["skipped"]) == (8, 0)
    written = sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == rels  # same relative paths and names, .jpg stays .jpg, no stray files
    for rel in rels:
        src, out = read_image(tmp_path / "src" / rel), read_image(tmp_path / "out" / rel)
        assert out.dtype == np.uint8 and out.shape == src.shape[:2] + (1,)  # B is 1-channel

    # a PNG's values are the network's output, mapped back to A's 8-bit range [0, 255]
    assert json.loads((artifacts / "a2b" / "meta.json").read_text())["input"]["value_range"] == [0.0, 255.0]
    src = read_image(tmp_path / "src" / rels[0])
    net = load_artifact(artifacts / "a2b").module("cpu")  # the TorchScript network
    with torch.no_grad():
        y = net(torch.from_numpy(src).permute(2, 0, 1)[None].float() / 255 * 2 - 1)
    expected = ((y[0, 0] + 1) / 2 * 255).round().clamp(0, 255).numpy()
    assert np.abs(read_image(tmp_path / "out" / rels[0])[..., 0].astype(float) - expected).max() <= 1

    # batching (several images per forward, separate forwards per size) does not change results
    one = translate_folder(artifacts / "a2b", tmp_path / "src", tmp_path / "one", batch_size=1, units="input",
                           progress=False)
    assert one["translated"] == 8
    for rel in rels:
        if rel.suffix == ".png":  # JPEG re-encoding is lossy
            a, b = read_image(tmp_path / "out" / rel), read_image(tmp_path / "one" / rel)
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 1, rel


def test_16bit_input_units_stay_16bit_and_8bit_only_formats_become_png(artifacts, tmp_path, capsys):
    src = tmp_path / "thermal"
    make_images(src, 2, 1, np.uint16, size=36)
    for name in ("mislabeled_1.jpg", "mislabeled_2.jpg"):  # 16-bit PNG data behind a .jpg name
        (src / name).write_bytes((src / "img_000.png").read_bytes())
    (src / "mislabeled_1.png").write_bytes((src / "img_001.png").read_bytes())  # takes the obvious name
    summary = translate_folder(artifacts / "b2a", src, tmp_path / "out", batch_size=8, units="input", progress=False)
    assert (summary["translated"], summary["skipped"]) == (5, 0)
    outputs = {p.name: read_image(p) for p in (tmp_path / "out").iterdir()}
    assert set(outputs) == {"img_000.png", "img_001.png", "mislabeled_1.png", "mislabeled_1.jpg.png", "mislabeled_2.png"}
    for img in outputs.values():
        assert img.dtype == np.uint16 and img.shape == (36, 44, 3)  # A is RGB
    assert img.max() > 255  # really 16-bit values, not an 8-bit image in a 16-bit container
    # the same input gives the same output whatever name it was written under
    for copy, original in (("mislabeled_2.png", "img_000.png"), ("mislabeled_1.png", "img_001.png")):
        assert np.abs(outputs[copy].astype(int) - outputs[original].astype(int)).max() <= 1
    assert summary["renamed"] == {str(src / "mislabeled_1.jpg"): str(tmp_path / "out" / "mislabeled_1.jpg.png"),
                                  str(src / "mislabeled_2.jpg"): str(tmp_path / "out" / "mislabeled_2.png")}
    err = capsys.readouterr().err
    assert err.count("writing PNG instead") == 1 and "mislabeled_1.jpg" in err


def test_cli_skips_and_names_bad_files_and_writes_the_rest(artifacts, tmp_path, capsys):
    src = tmp_path / "src"
    good = make_images(src, 3, 3, np.uint8, size=40)
    truncated = src / "truncated.png"
    data = good[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    garbage = src / "nested" / "garbage.jpg"
    garbage.parent.mkdir()
    garbage.write_bytes(b"\x00not a jpeg at all" * 10)
    rc = main(["translate", str(artifacts / "a2b"), str(src), str(tmp_path / "out"), "--batch-size", "4",
               "--tile", "32", "--strength", "0.5"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "translated 3, skipped 2" in out
    assert f"warning: skipped {truncated}" in err and f"warning: skipped {garbage}" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == [p.name for p in good]

    # nothing readable: exit 1; a bad argument: a one-line error, no traceback
    assert main(["translate", str(artifacts / "a2b"), str(truncated), str(tmp_path / "out2")]) == 1
    assert "translated 0, skipped 1" in capsys.readouterr().out
    assert main(["translate", str(artifacts / "a2b"), str(src), str(tmp_path / "o"), "--tile", "32",
                 "--overlap", "32"]) == 2
    assert "overlap must be" in capsys.readouterr().err
    assert main(["translate", str(tmp_path), str(src), str(tmp_path / "o")]) == 2
    assert "not an exported translator" in capsys.readouterr().err
    with pytest.raises(TranslateError, match="input folder"):
        translate_folder(artifacts / "a2b", src, src, progress=False)


class LocalNet(nn.Module):
    """A norm-free, fully convolutional net with a stride-2 level: each output sees about 8 px around it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.Tanh(),
            nn.Conv2d(8, 8, 3, padding=1), nn.Tanh(),
            nn.Upsample(scale_factor=2), nn.Conv2d(8, 1, 3, padding=1), nn.Tanh(),
        )
        for m in self.net:
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class StubArtifact:
    """What translate_tiled needs of an artifact, around any (B, 3, H, W) -> (B, 1, H, W) network."""

    in_channels, out_channels = 3, 1

    def __init__(self, net: nn.Module, size_multiple: int) -> None:
        self.size_multiple = size_multiple
        self.net = PaddedNetwork(net, size_multiple).eval()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_tile_spans_cover_align_and_overlap():
    for length, tile, overlap, multiple in [(100, 32, 8, 4), (77, 32, 8, 4), (72, 30, 8, 4), (50, 16, 5, 1), (20, 32, 8, 4)]:
        spans = tile_spans(length, tile, overlap, multiple)
        assert spans[0][0] == 0 and spans[-1][1] == length
        assert all(s % multiple == 0 and e - s >= min(length, tile // multiple * multiple) for s, e in spans)
        assert all(e0 - s1 >= overlap for (_, e0), (s1, _) in zip(spans, spans[1:]))
    w = edge_window(32, 8, True, False)
    assert w[:2].eq(0).all() and w[-16:].eq(1).all() and (w[2:6] > 0).all() and (w[:8].diff() >= 0).all()
    # two tiles overlapping by exactly `overlap` get weights that sum to 1
    a, b = edge_window(32, 8, False, True), edge_window(32, 8, True, False)
    assert torch.allclose(a[-8:] + b[:8], torch.ones(8))
    assert edge_window(32, 8, False, False).eq(1).all()  # image borders keep weight 1


@pytest.mark.parametrize("size", [(96, 150), (77, 101)])
def test_tiles_blend_to_exactly_the_untiled_output_of_a_local_network(size):
    art = StubArtifact(LocalNet(), size_multiple=2)
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0))
    whole = translate_unit(art, x, torch.ones(2), keep_input_channels=False)
    assert whole.std() > 0.05  # the network's output has structure to get wrong
    tiled = translate_tiled(art, x, tile=64, overlap=32)  # an 8 px margin of context
    assert torch.allclose(tiled, whole, atol=1e-5)
    naive = translate_tiled(art, x, tile=64, overlap=0)  # hard seams without context: the test can fail
    assert (naive - whole).abs().max() > 0.01

    # a constant image: the same (near-)constant interior, no seam lines
    flat = torch.full((1, 3, *size), 0.4)
    whole = translate_unit(art, flat, torch.ones(1), keep_input_channels=False)[0, 0]
    tiled = translate_tiled(art, flat, tile=64, overlap=32)[0, 0]
    inner = tiled[10:-10, 10:-10]
    assert inner.max() - inner.min() < 1e-5
    assert (tiled - whole).abs().max() < 1e-5


def test_tiled_trained_generator_matches_untiled_and_the_folder_api_uses_it(artifacts, tmp_path):
    art = load_artifact(artifacts / "a2b")
    x = torch.rand(1, 3, 72, 100, generator=torch.Generator().manual_seed(0))
    whole = translate_unit(art, x, torch.ones(1), keep_input_channels=False)
    tiled = translate_tiled(art, x, tile=48, overlap=24)
    assert tiled.shape == whole.shape and 0 <= tiled.min() and tiled.max() <= 1
    # instance norm sees each tile's own statistics: close to, not equal to, the whole image
    assert (tiled - whole).abs().mean() < 0.05

    src = tmp_path / "big"
    img = (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    write_image(src / "big.png", img)
    translate_folder(artifacts / "a2b", src, tmp_path / "whole", units="input", progress=False)
    translate_folder(artifacts / "a2b", src, tmp_path / "tiled", tile=48, overlap=24, units="input", progress=False)
    a = read_image(tmp_path / "whole" / "big.png").astype(float) / 255
    b = read_image(tmp_path / "tiled" / "big.png").astype(float) / 255
    assert a.shape == b.shape == (72, 100, 1)
    assert np.abs(a - b).mean() < 0.05 and np.abs(a - b).max() > 0  # tiling did happen


def test_bench_tool_runs_tiny_and_prints_json(artifacts):
    cmd = [sys.executable, str(BENCH), str(artifacts / "a2b"), "--size", "32", "--batch-sizes", "1,2",
           "--repeats", "1", "--warmup", "1", "--images-per-repeat", "2", "--devices", "cpu",
           "--backends", "eager,pt2,torchscript,onnx"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["size"] == 32 and report["batch_sizes"] == [1, 2]
    assert report["network"]["name"] == "resnet_2blocks"
    for backend in ("eager", "pt2", "torchscript", "onnx"):
        cpu = report["results"][backend]["cpu"]
        assert cpu["memory_measure"] in report["memory"]
        for batch in ("batch_1", "batch_2"):
            assert cpu["batches"][batch]["images_per_s_median"] > 0
            assert cpu["batches"][batch]["peak_memory_mib"] >= 0


@pytest.mark.slow  # AOTInductor compiles C++ for this CPU: about half a minute
def test_bench_tool_compiles_the_pt2_program_ahead_of_time_and_reports_the_compile_time(artifacts):
    cmd = [sys.executable, str(BENCH), str(artifacts / "a2b"), "--size", "32", "--batch-sizes", "1,3",
           "--repeats", "1", "--warmup", "1", "--images-per-repeat", "2", "--devices", "cpu", "--backends", "aoti"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    cpu = json.loads(out.stdout)["results"]["aoti"]["cpu"]
    assert cpu["compile_s"] > 0
    assert all(cpu["batches"][b]["images_per_s_median"] > 0 for b in ("batch_1", "batch_3"))  # dynamic batch


def test_bench_tool_builds_an_untrained_quickstart_artifact_without_arguments():
    cmd = [sys.executable, str(BENCH), "--size", "16", "--batch-sizes", "1", "--repeats", "1", "--warmup", "0",
           "--images-per-repeat", "1", "--backends", "onnx", "--devices", "cpu"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["network"]["name"] == "resnet_6blocks" and report["network"]["args"]["ngf"] == 16
    assert (report["network"]["args"]["in_channels"], report["network"]["args"]["out_channels"]) == (3, 1)
    assert report["results"]["onnx"]["cpu"]["batches"]["batch_1"]["images_per_s_median"] > 0


def test_tiles_too_small_for_the_network_grid_are_refused():
    from cyclecmda.export.translate import TranslateError, check_tiling

    check_tiling(32, 8, multiple=4)
    with pytest.raises(TranslateError, match="at least 512"):
        check_tiling(300, 75, multiple=256)


def test_an_output_folder_holding_files_of_the_same_names_is_refused_unless_overwrite(artifacts, tmp_path, capsys,
                                                                                       monkeypatch):
    src = tmp_path / "visible"
    make_images(src, 3, 3, np.uint8, size=40)
    out = tmp_path / "thermal"  # real frames that share names with the inputs
    frames = make_images(out, 2, 1, np.uint16, size=40, seed=5)
    (out / "notes.txt").write_text("kept")
    before = {p: p.read_bytes() for p in frames}

    def no_work(*args, **kwargs):
        raise AssertionError("translated before refusing the output folder")

    with monkeypatch.context() as m:
        m.setattr("cyclecmda.export.translate.translate_arrays", no_work)
        assert main(["translate", str(artifacts / "a2b"), str(src), str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
        assert str(out / "img_000.png") in err and "2 files" in err and "--overwrite" in err, err
        with pytest.raises(TranslateError, match=r"img_000\.png.*--overwrite"):
            translate_folder(artifacts / "a2b", src, out, progress=False)
    assert {p: p.read_bytes() for p in frames} == before  # nothing replaced
    assert sorted(p.name for p in out.iterdir()) == ["img_000.png", "img_001.png", "notes.txt"]  # nothing added

    # files of other names do not stand in the way; --overwrite replaces those of the same names
    assert translate_folder(artifacts / "a2b", src, tmp_path / "fresh", progress=False)["translated"] == 3
    assert main(["translate", str(artifacts / "a2b"), str(src), str(out), "--overwrite"]) == 0
    assert "translated 3, skipped 0" in capsys.readouterr().out
    assert all(p.read_bytes() != before[p] for p in frames) and (out / "img_002.png").is_file()
    assert translate_folder(artifacts / "a2b", src, out, overwrite=True, progress=False)["translated"] == 3
