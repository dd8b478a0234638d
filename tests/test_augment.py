from __future__ import annotations

import pickle

import albumentations as A
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from cyclecmda.augment import ArtifactError, CycleGANTranslate, CycleGANTranslateV2, SynthesizeModality, load_artifact


def rgb(h=70, w=90, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def direct_a2b(artifact, img: np.ndarray) -> np.ndarray:
    """What the a2b generator makes of a uint8 RGB image, as uint8 gray replicated to RGB."""
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        y = (artifact(x * 2 - 1) + 1) / 2
    return (y.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).expand(-1, -1, 3).numpy()


def labelled_pipeline(extra, seed):
    return A.Compose(
        [A.RandomCrop(64, 64), *extra, A.HorizontalFlip(p=0.5), A.Affine(rotate=(-20, 20), p=0.5)],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]),
        keypoint_params=A.KeypointParams(format="xy", label_fields=["kp_labels"]),
        seed=seed,
    )


def test_inside_compose_only_the_image_changes(exported):
    img = rgb()
    mask = np.zeros(img.shape[:2], np.uint8)
    mask[10:40, 20:60] = 1
    sample = dict(image=img, mask=mask, bboxes=[(20, 10, 60, 40)], labels=[3], keypoints=[(30, 20)], kp_labels=[1])
    for seed in range(6):
        with_it = labelled_pipeline([CycleGANTranslate(exported / "a2b", strength=(0.5, 1.0))], seed)(**sample)
        without = labelled_pipeline([], seed)(**sample)
        np.testing.assert_array_equal(with_it["mask"], without["mask"])
        np.testing.assert_allclose(with_it["bboxes"], without["bboxes"])
        np.testing.assert_allclose(with_it["keypoints"], without["keypoints"])
        assert list(with_it["labels"]) == list(without["labels"])
        assert with_it["image"].shape == without["image"].shape and with_it["image"].dtype == np.uint8
        assert not np.array_equal(with_it["image"], without["image"])


def test_strength_blends_original_and_translation(exported):
    img = rgb(32, 40)
    art = load_artifact(exported / "a2b")
    full = CycleGANTranslate(exported / "a2b", strength=1.0)(image=img)["image"]
    np.testing.assert_array_equal(full, direct_a2b(art, img))
    assert np.array_equal(CycleGANTranslate(exported / "a2b", strength=0.0)(image=img)["image"], img)
    half = CycleGANTranslate(exported / "a2b", strength=0.5)(image=img)["image"].astype(float)
    np.testing.assert_allclose(half, (img.astype(float) + full) / 2, atol=1.0)
    with pytest.raises(ValueError, match="strength"):
        CycleGANTranslate(exported / "a2b", strength=(0.9, 0.1))


def observed_strength(out, img, full):
    """(s, misfit): the blend weight with ``out = img + s * (full - img)`` (least squares), and the
    largest pixel error of that fit. Images are float in [0, 1], so nothing is rounded."""
    out, img, full = (np.asarray(x, np.float64) for x in (out, img, full))
    d = full - img
    s = float(((out - img) * d).sum() / (d * d).sum())
    return s, float(np.abs(img + s * d - out).max())


def full_a2b(artifact, img: torch.Tensor) -> torch.Tensor:
    """The a2b generator's translation of float RGB images (N, 3, H, W) in [0, 1], gray replicated to RGB."""
    with torch.no_grad():
        y = ((artifact(img * 2 - 1) + 1) / 2).clamp(0, 1)
    return y.expand(-1, 3, -1, -1)


def test_strength_range_draws_a_blend_inside_it_per_call(exported):
    img = np.random.default_rng(2).random((32, 40, 3)).astype(np.float32)
    full = full_a2b(load_artifact(exported / "a2b"), torch.from_numpy(img).permute(2, 0, 1)[None])[0]
    full = full.permute(1, 2, 0).numpy()
    assert np.abs(full - img).mean() > 0.05  # the translation is far from the input: s is well defined
    lo, hi = 0.3, 0.6
    drawn = []
    for seed in range(24):
        out = A.Compose([CycleGANTranslate(exported / "a2b", strength=(lo, hi))], seed=seed)(image=img)["image"]
        s, misfit = observed_strength(out, img, full)
        assert misfit < 1e-5, f"seed {seed}: not a blend of the input and its translation"
        drawn.append(s)
    assert lo - 1e-6 <= min(drawn) and max(drawn) <= hi + 1e-6, drawn
    assert len({round(s, 4) for s in drawn}) >= 20  # a new strength per call
    assert min(drawn) < lo + (hi - lo) / 4 and max(drawn) > hi - (hi - lo) / 4  # the whole range is used
    again = A.Compose([CycleGANTranslate(exported / "a2b", strength=(lo, hi))], seed=5)(image=img)["image"]
    assert observed_strength(again, img, full)[0] == pytest.approx(drawn[5], abs=1e-6)  # seeded by the pipeline
    for seed in range(3):
        fixed = A.Compose([CycleGANTranslate(exported / "a2b", strength=0.45)], seed=seed)(image=img)["image"]
        assert observed_strength(fixed, img, full)[0] == pytest.approx(0.45, abs=1e-5)
    np.testing.assert_allclose(CycleGANTranslate(exported / "a2b", strength=1.0)(image=img)["image"], full, atol=1e-6)


def test_torchvision_strength_range_draws_one_blend_per_sample(exported):
    img = torch.from_numpy(np.random.default_rng(3).random((3, 32, 40)).astype(np.float32))
    batch = img.expand(16, -1, -1, -1).contiguous()
    full = full_a2b(load_artifact(exported / "a2b"), img[None])[0]
    lo, hi = 0.2, 0.7
    torch.manual_seed(0)
    out = CycleGANTranslateV2(exported / "a2b", strength=(lo, hi))(batch)
    fits = [observed_strength(o.numpy(), img.numpy(), full.numpy()) for o in out]
    assert max(misfit for _, misfit in fits) < 1e-5
    drawn = [s for s, _ in fits]
    assert lo - 1e-6 <= min(drawn) and max(drawn) <= hi + 1e-6, drawn
    assert len({round(s, 4) for s in drawn}) == 16  # each sample of a batch draws its own
    assert min(drawn) < lo + (hi - lo) / 4 and max(drawn) > hi - (hi - lo) / 4


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("shape", [(30, 34), (30, 34, 1), (30, 34, 3)])
def test_dtype_range_and_layout_are_kept(exported, dtype, shape):
    rng = np.random.default_rng(1)
    img = rng.random(shape).astype(np.float32) if dtype == np.float32 else \
        rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    for direction in ("a2b", "b2a"):
        out = CycleGANTranslate(exported / direction)(image=img)["image"]
        assert out.dtype == img.dtype and out.shape == img.shape
        if dtype == np.float32:
            assert 0.0 <= out.min() and out.max() <= 1.0


def test_sixteen_bit_input_uses_the_trained_value_range(exported):
    # b2a: B is 16-bit with raw range [1000, 60000]; counts outside are clipped like in training
    art = load_artifact(exported / "b2a")
    low = np.full((32, 32), 0, np.uint16)
    at_lo = np.full((32, 32), 1000, np.uint16)
    t = CycleGANTranslate(exported / "b2a")
    np.testing.assert_array_equal(t(image=low)["image"], t(image=at_lo)["image"])
    out = t(image=at_lo)["image"]
    assert out.min() >= 1000 and out.max() <= 60000  # returned in the same raw range
    assert art.meta["input"]["value_range"] == [1000.0, 60000.0]


def test_batched_images_equal_single_images(exported):
    batch = np.stack([rgb(32, 32, s) for s in range(3)])
    t = CycleGANTranslate(exported / "a2b")
    together = t(images=batch)["images"]
    assert together.shape == batch.shape
    for i in range(3):
        np.testing.assert_array_equal(together[i], t(image=batch[i])["image"])


def test_serialisation_and_lazy_loading(exported):
    t = CycleGANTranslate(exported / "a2b", strength=(0.2, 0.8), device="cpu", p=0.7)
    restored = A.from_dict(A.to_dict(t))
    assert isinstance(restored, CycleGANTranslate)
    assert (restored.artifact, tuple(restored.strength), restored.p) == (t.artifact, (0.2, 0.8), 0.7)
    assert len(pickle.dumps(t)) < 20_000  # the network is not pickled along
    with pytest.raises(ArtifactError, match="no meta.json"):
        CycleGANTranslate(exported)  # the parent folder, not a direction


class Augmented(Dataset):
    def __init__(self, transform):
        self.transform = transform

    def __len__(self):
        return 4

    def __getitem__(self, i):
        out = self.transform(image=rgb(32, 32, i), mask=np.full((32, 32), i, np.uint8))
        return torch.from_numpy(out["image"]), torch.from_numpy(out["mask"])


def test_runs_in_dataloader_workers(exported):
    pipeline = A.Compose([CycleGANTranslate(exported / "a2b")])
    direct = [Augmented(pipeline)[i] for i in range(4)]
    loaded = list(DataLoader(Augmented(pipeline), batch_size=2, num_workers=2))
    images = torch.cat([b[0] for b in loaded])
    assert torch.equal(images, torch.stack([d[0] for d in direct]))
    assert torch.equal(torch.cat([b[1] for b in loaded])[:, 0, 0], torch.arange(4, dtype=torch.uint8))


def test_torchvision_flavour_on_images_and_batches_leaves_targets(exported):
    t = CycleGANTranslateV2(exported / "a2b")
    imgs = np.stack([rgb(32, 40, s) for s in range(2)])
    batch = tv_tensors.Image(torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous())
    mask = tv_tensors.Mask(torch.ones(2, 32, 40, dtype=torch.uint8))
    boxes = tv_tensors.BoundingBoxes([[1, 2, 10, 12]], format="XYXY", canvas_size=(32, 40))
    out_img, out_mask, out_boxes = v2.Compose([t])(batch, mask, boxes)
    assert isinstance(out_img, tv_tensors.Image) and out_img.dtype == torch.uint8 and out_img.shape == batch.shape
    assert torch.equal(out_mask, mask) and torch.equal(out_boxes, boxes)
    albu = CycleGANTranslate(exported / "a2b")(images=imgs)["images"]
    assert torch.equal(out_img.permute(0, 2, 3, 1), torch.from_numpy(albu))
    single = t(torch.rand(3, 32, 40))
    assert single.shape == (3, 32, 40) and single.dtype == torch.float32
    assert torch.equal(CycleGANTranslateV2(exported / "a2b", p=0.0)(batch), batch)


def locate(crop: np.ndarray, full: np.ndarray):
    """(top, left, flipped) at which `crop` (maybe flipped horizontally) sits in `full`."""
    h, w = crop.shape[:2]
    for flipped in (False, True):
        patch = crop[:, ::-1] if flipped else crop
        for top in range(full.shape[0] - h + 1):
            for left in range(full.shape[1] - w + 1):
                if np.array_equal(full[top : top + h, left : left + w], patch):
                    return top, left, flipped
    raise AssertionError("crop not found")


def test_synthesized_modality_follows_geometric_transforms(exported):
    img = rgb(70, 90)
    synth = SynthesizeModality(exported / "a2b", target="infrared")
    infrared_full = synth(image=img)["infrared"]
    assert infrared_full.shape == (70, 90, 1) and infrared_full.dtype == np.uint16  # B: 16-bit counts
    seen = set()
    for seed in range(8):
        pipeline = A.Compose([SynthesizeModality(exported / "a2b", target="infrared"), A.RandomCrop(48, 48),
                              A.HorizontalFlip(p=0.5)], additional_targets={"infrared": "image"}, seed=seed)
        got = pipeline(image=img)
        top, left, flipped = locate(got["image"], img)  # the crop and flip applied to the visible image
        expected = infrared_full[top : top + 48, left : left + 48]
        np.testing.assert_array_equal(got["infrared"], expected[:, ::-1] if flipped else expected)
        seen.add(flipped)
    assert seen == {False, True}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_translation_runs_on_the_inputs_cuda_device(exported):
    batch = torch.rand(4, 3, 32, 32, device="cuda")
    out = CycleGANTranslateV2(exported / "a2b")(batch)
    assert out.device == batch.device and out.shape == batch.shape
    cpu = CycleGANTranslateV2(exported / "a2b")(batch.cpu())
    torch.testing.assert_close(out.cpu(), cpu, atol=1e-3, rtol=0)
    img = rgb(32, 32)
    on_gpu = CycleGANTranslate(exported / "a2b", device="cuda")(image=img)["image"]
    assert np.abs(on_gpu.astype(int) - CycleGANTranslate(exported / "a2b")(image=img)["image"]).max() <= 1


def test_onnx_runtime_translates_like_torch_in_a_compose_and_in_dataloader_workers(exported):
    from cyclecmda.export.artifact import OnnxRuntimeNetwork

    img = rgb(70, 90)  # not a multiple of the network's size multiple: padded and cropped back
    mask = np.zeros(img.shape[:2], np.uint8)
    mask[10:40, 20:60] = 1
    sample = dict(image=img, mask=mask, bboxes=[(20, 10, 60, 40)], labels=[3], keypoints=[(30, 20)], kp_labels=[1])
    for seed in range(3):
        runs = {runtime: labelled_pipeline([CycleGANTranslate(exported / "a2b", runtime=runtime)], seed)(**sample)
                for runtime in ("torch", "onnxruntime")}
        torch_run, ort_run = runs["torch"], runs["onnxruntime"]
        np.testing.assert_array_equal(ort_run["mask"], torch_run["mask"])
        np.testing.assert_allclose(ort_run["bboxes"], torch_run["bboxes"])
        diff = np.abs(ort_run["image"].astype(int) - torch_run["image"].astype(int))
        assert diff.max() <= 1  # the two runtimes agree to 1e-4: at most one uint8 step of rounding
    assert isinstance(load_artifact(exported / "a2b", runtime="onnxruntime").module("cpu").net, OnnxRuntimeNetwork)

    restored = A.from_dict(A.to_dict(CycleGANTranslate(exported / "a2b", runtime="onnxruntime")))
    assert restored.runtime == "onnxruntime"
    pipeline = A.Compose([CycleGANTranslate(exported / "a2b", runtime="onnxruntime")])
    loaded = torch.cat([b[0] for b in DataLoader(Augmented(pipeline), batch_size=2, num_workers=2)])
    assert torch.equal(loaded, torch.stack([Augmented(pipeline)[i][0] for i in range(4)]))

    v2_out = CycleGANTranslateV2(exported / "a2b", runtime="onnxruntime")(torch.from_numpy(img).permute(2, 0, 1))
    v2_torch = CycleGANTranslateV2(exported / "a2b")(torch.from_numpy(img).permute(2, 0, 1))
    assert (v2_out.int() - v2_torch.int()).abs().max() <= 1


def test_onnx_runtime_errors_name_the_missing_file_the_device_and_the_choices(exported, tmp_path):
    import json
    import shutil

    folder = tmp_path / "a2b"
    shutil.copytree(exported / "a2b", folder)
    meta = json.loads((folder / "meta.json").read_text())
    del meta["files"]["onnx"]
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=r"no model.onnx.*--format pt2,onnx"):
        CycleGANTranslate(folder, runtime="onnxruntime")
    with pytest.raises(ValueError, match="runs on the CPU"):
        CycleGANTranslate(exported / "a2b", runtime="onnxruntime", device="cuda")
    with pytest.raises(ValueError, match="'torch'.*'onnxruntime'.*got 'ort'"):
        SynthesizeModality(exported / "a2b", runtime="ort")
    from cyclecmda.augment import Synthesis

    with pytest.raises(ValueError, match="runs on the CPU"):
        Synthesis(source="image", artifact=str(exported / "a2b"), device="cuda:0", runtime="onnxruntime")

    damaged = tmp_path / "damaged"
    shutil.copytree(exported / "a2b", damaged)
    (damaged / "model.onnx").write_bytes(b"not an onnx model" * 10)
    t = CycleGANTranslate(damaged, runtime="onnxruntime")
    with pytest.raises(ArtifactError, match=r"model.onnx' is not a loadable ONNX model"):
        t(image=rgb(32, 32))
