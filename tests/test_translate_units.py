"""Units of translations: the target domain's dtype and raw range, or the input's.

The session artifact ``exported`` translates A (RGB, 8-bit, 0..255) and B (1 channel, 16-bit,
raw range 1000..60000).
"""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch
from helpers import make_images

from cyclecmda.augment import CycleGANTranslate, CycleGANTranslateV2, MultiModalCompose, SynthesizeModality
from cyclecmda.cli import main
from cyclecmda.data.images import read_image, write_image
from cyclecmda.export.translate import TranslateError, translate_folder

B_RANGE = (1000, 60000)


@pytest.fixture
def thermal(tmp_path):
    """16-bit thermal frames of raw counts 20000..40000."""
    rng = np.random.default_rng(0)
    for i in range(3):
        write_image(tmp_path / "thermal" / f"t{i}.png", rng.integers(20000, 40000, (32, 40, 1)).astype(np.uint16))
    return tmp_path / "thermal"


def outputs(folder):
    return {p.name: read_image(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_visible_to_thermal_writes_thermal_counts_by_default(exported, tmp_path):
    make_images(tmp_path / "visible", 2, 3, np.uint8)
    make_images(tmp_path / "visible", 1, 3, np.uint8, ext=".jpg", seed=3)
    summary = translate_folder(exported / "a2b", tmp_path / "visible", tmp_path / "out", progress=False)
    assert (summary["translated"], summary["skipped"]) == (3, 0)
    written = outputs(tmp_path / "out")
    assert set(written) == {"img_000.png", "img_001.png", "img_000.jpg.png"}  # 16-bit cannot be a JPEG
    for img in written.values():
        assert img.dtype == np.uint16 and img.shape == (40, 48, 1)
        assert B_RANGE[0] <= img.min() and img.max() <= B_RANGE[1] and img.max() > 255

    translate_folder(exported / "a2b", tmp_path / "visible", tmp_path / "as_input", units="input", progress=False)
    for img in outputs(tmp_path / "as_input").values():
        assert img.dtype == np.uint8 and img.shape == (40, 48, 1)
    # the same translation either way: target counts and input values are two scales of one output
    target = written["img_000.png"].astype(float)
    unit = (target - B_RANGE[0]) / (B_RANGE[1] - B_RANGE[0])
    as_input = outputs(tmp_path / "as_input")["img_000.png"].astype(float) / 255
    assert np.abs(unit - as_input).max() < 1 / 255 + 1e-3


def test_thermal_to_visible_writes_8bit_colour_by_default(exported, thermal, tmp_path, capsys):
    assert main(["translate", str(exported / "b2a"), str(thermal), str(tmp_path / "out")]) == 0
    for img in outputs(tmp_path / "out").values():
        assert img.dtype == np.uint8 and img.shape == (32, 40, 3)
    assert main(["translate", str(exported / "b2a"), str(thermal), str(tmp_path / "raw"), "--units", "input"]) == 0
    for img in outputs(tmp_path / "raw").values():
        assert img.dtype == np.uint16 and B_RANGE[0] <= img.min() and img.max() <= B_RANGE[1]
    capsys.readouterr()
    with pytest.raises(TranslateError, match="units.*input.*target"):
        translate_folder(exported / "b2a", thermal, tmp_path / "x", units="native", progress=False)


@pytest.mark.parametrize("p", [1.0, 0.0])
def test_albumentations_transform_keeps_the_pipeline_dtype_unless_asked(exported, p):
    visible = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    counts = np.random.default_rng(1).integers(20000, 40000, (32, 40, 1)).astype(np.uint16)
    assert CycleGANTranslate(exported / "a2b", p=p)(image=visible)["image"].dtype == np.uint8
    assert CycleGANTranslate(exported / "b2a", p=p)(image=counts)["image"].dtype == np.uint16

    # units="target": every image comes out in the target's units, translated or not (p)
    to_thermal = CycleGANTranslate(exported / "a2b", units="target", keep_input_channels=False, p=p)
    out = to_thermal(image=visible)["image"]
    assert out.dtype == np.uint16 and out.shape == (32, 40, 1) and B_RANGE[0] <= out.min() and out.max() <= B_RANGE[1]
    out = CycleGANTranslate(exported / "b2a", units="target", p=p)(image=counts)["image"]
    assert out.dtype == np.uint8 and out.shape == (32, 40, 1)
    batch = CycleGANTranslate(exported / "a2b", units="target", p=p)(images=np.stack([visible, visible]))["images"]
    assert batch.dtype == np.uint16 and batch.shape == (2, 32, 40, 3)

    restored = A.from_dict(A.to_dict(to_thermal))
    assert (restored.units, restored.p, restored.keep_input_channels) == ("target", p, False)
    with pytest.raises(ValueError, match="units"):
        CycleGANTranslate(exported / "a2b", units="raw")


def test_torchvision_transform_keeps_the_dtype_unless_asked(exported):
    batch = torch.randint(0, 256, (2, 3, 32, 40), dtype=torch.uint8)
    assert CycleGANTranslateV2(exported / "a2b")(batch).dtype == torch.uint8
    for p in (1.0, 0.0):
        out = CycleGANTranslateV2(exported / "a2b", units="target", keep_input_channels=False, p=p)(batch)
        assert out.dtype == torch.uint16 and out.shape == (2, 1, 32, 40)
        assert B_RANGE[0] <= int(out.int().min()) and int(out.int().max()) <= B_RANGE[1]
    t = CycleGANTranslateV2(exported / "a2b", units="target")
    assert t.units == "target"
    with pytest.raises(ValueError, match="units"):
        CycleGANTranslateV2(exported / "a2b", units="raw")


def test_synthesized_modality_is_in_the_target_units_by_default(exported):
    visible = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    infrared = SynthesizeModality(exported / "a2b", target="infrared")(image=visible)["infrared"]
    assert infrared.dtype == np.uint16 and B_RANGE[0] <= infrared.min() and infrared.max() <= B_RANGE[1]
    as_input = SynthesizeModality(exported / "a2b", target="infrared", units="input")(image=visible)["infrared"]
    assert as_input.dtype == np.uint8
    restored = A.from_dict(A.to_dict(SynthesizeModality(exported / "a2b", units="input")))
    assert restored.units == "input"
    # the same thermal frame as MultiModalCompose's synthesis in the translator's native units
    compose = MultiModalCompose({"visible": "image", "infrared": "image"},
                                synthesize={"infrared": {"source": "visible", "artifact": str(exported / "a2b")}})
    np.testing.assert_array_equal(compose(visible=visible)["infrared"], infrared)
