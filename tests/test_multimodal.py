"""Aligned multimodal augmentation: MultiModalCompose, ModalityDropout, CrossModalMixup."""

from __future__ import annotations

import json

import albumentations as A
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from cyclecmda.augment import CrossModalMixup, ModalityDropout, MultiModalCompose, load_artifact
from cyclecmda.augment.albu import translate_batch

BBOX = A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=0.0)
MODALITIES = {"visible": "image", "infrared": "image", "segmentation": "mask"}


def marked_sample(y: int = 24, x: int = 34, size: int = 64) -> dict:
    """A blank RGB 8-bit visible frame, 16-bit infrared frame and mask with a 3x3 marker at (y, x)."""
    visible = np.zeros((size, size, 3), np.uint8)
    infrared = np.zeros((size, size), np.uint16)
    mask = np.zeros((size, size), np.uint8)
    visible[y - 1 : y + 2, x - 1 : x + 2] = 255
    infrared[y - 1 : y + 2, x - 1 : x + 2] = 60000
    mask[y - 1 : y + 2, x - 1 : x + 2] = 1
    return {"visible": visible, "infrared": infrared, "segmentation": mask,
            "bboxes": [[x - 4, y - 4, x + 5, y + 5]], "labels": [2]}


def centroid(image: np.ndarray) -> np.ndarray:
    """Where the marker is: the weighted centre of the pixels above half the peak over the background."""
    weights = image.astype(np.float64).reshape(image.shape[0], image.shape[1], -1).sum(-1)
    weights -= weights.min()
    weights[weights < 0.5 * weights.max()] = 0
    yy, xx = np.mgrid[: weights.shape[0], : weights.shape[1]]
    return np.array([(yy * weights).sum(), (xx * weights).sum()]) / weights.sum()


def test_geometric_transforms_keep_every_modality_and_the_boxes_aligned():
    geometric = [A.RandomCrop(48, 48), A.HorizontalFlip(p=0.5), A.Rotate(limit=40, border_mode=0, p=1.0)]
    photometric = {"visible": [A.RandomBrightnessContrast(p=1.0)]}
    for seed in range(8):
        aug = MultiModalCompose(MODALITIES, geometric, photometric, bbox_params=BBOX, seed=seed)
        out = aug(**marked_sample(y=20 + seed, x=30))
        assert out["visible"].shape == (48, 48, 3) and out["infrared"].shape == (48, 48)
        assert out["infrared"].dtype == np.uint16 and out["segmentation"].dtype == np.uint8
        at = centroid(out["infrared"])
        np.testing.assert_allclose(centroid(out["visible"]), at, atol=0.5)
        np.testing.assert_allclose(centroid(out["segmentation"]), at, atol=0.75)
        (x0, y0, x1, y1), = out["bboxes"]
        assert x0 <= at[1] <= x1 and y0 <= at[0] <= y1 and out["labels"] == [2]


def test_photometric_transforms_touch_only_their_modality_and_16_bit_round_trips():
    sample = {k: v for k, v in marked_sample().items() if k in MODALITIES}
    sample["infrared"] = sample["infrared"] + np.uint16(1000)
    aug = MultiModalCompose(MODALITIES, photometric={"infrared": [A.InvertImg(p=1.0)]})
    out = aug(**sample)
    assert np.array_equal(out["visible"], sample["visible"])
    assert np.array_equal(out["segmentation"], sample["segmentation"])
    assert out["infrared"].dtype == np.uint16
    assert np.array_equal(out["infrared"], 65535 - sample["infrared"])


def test_misplaced_transforms_and_undeclared_keys_are_clear_errors():
    with pytest.raises(TypeError, match="RandomBrightnessContrast in geometric .*photometric"):
        MultiModalCompose(MODALITIES, geometric=[A.RandomBrightnessContrast()])
    with pytest.raises(TypeError, match="HorizontalFlip in photometric\\['visible'\\]"):
        MultiModalCompose(MODALITIES, photometric={"visible": [A.HorizontalFlip()]})
    with pytest.raises(KeyError, match="'thermal', which is not an image modality"):
        MultiModalCompose(MODALITIES, photometric={"thermal": [A.InvertImg()]})
    with pytest.raises(ValueError, match="reserved"):
        MultiModalCompose({"image": "image", "mask": "mask"})
    with pytest.raises(ValueError, match="has 'bboxes' but the pipeline was built without bbox_params"):
        MultiModalCompose(MODALITIES)(**marked_sample())
    with pytest.raises(KeyError, match="lacks infrared"):
        MultiModalCompose(MODALITIES)(visible=np.zeros((8, 8, 3), np.uint8), segmentation=np.zeros((8, 8), np.uint8))


def test_missing_modality_is_synthesized_before_the_geometry(exported):
    art = load_artifact(exported / "a2b")
    rng = np.random.default_rng(0)
    visible = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    aug = MultiModalCompose(MODALITIES, geometric=[A.HorizontalFlip(p=1.0)],
                            synthesize={"infrared": {"source": "visible", "artifact": str(exported / "a2b")}})
    out = aug(visible=visible, segmentation=np.zeros((32, 32), np.uint8))
    lo, hi = art.meta["output"]["value_range"]
    unit = translate_batch(art, visible[None].astype(np.float32) / 255.0, [1.0], "cpu", keep_input_channels=False)[0]
    expected = np.rint(unit * (hi - lo) + lo).astype(np.uint16)[:, ::-1]
    assert out["infrared"].dtype == np.uint16 and art.meta["output"]["bit_depth"] == 16
    assert np.abs(out["infrared"].astype(int) - expected.astype(int)).max() <= 1
    assert np.array_equal(out["visible"], visible[:, ::-1])
    # a real infrared frame is kept, not replaced
    real = np.full((32, 32), 1234, np.uint16)
    assert np.array_equal(aug(visible=visible, infrared=real, segmentation=np.zeros((32, 32), np.uint8))["infrared"], real)


def test_modality_dropout_frequencies_match_and_one_modality_always_survives():
    p = {"visible": 0.2, "infrared": 0.3}
    drop = ModalityDropout(p, fill={"visible": 0, "infrared": 7}, seed=0)
    sample = {"visible": np.ones((4, 4, 3), np.uint8), "infrared": np.ones((4, 4), np.uint16), "label": 1}
    n = 20000
    counts = {"visible": 0, "infrared": 0}
    for _ in range(n):
        out = drop(sample)
        dropped = [k for k, v in out["dropped"].items() if v]
        assert len(dropped) <= 1
        for k in dropped:
            counts[k] += 1
            assert (out[k] == (0 if k == "visible" else 7)).all()
        for k in set(p) - set(dropped):
            assert np.array_equal(out[k], sample[k])
    for k, prob in p.items():
        sigma = (prob * (1 - prob) / n) ** 0.5
        assert abs(counts[k] / n - prob) < 4 * sigma, (k, counts[k] / n)
    # deterministic under a seed
    first, second = ModalityDropout(p, seed=3), ModalityDropout(p, seed=3)
    assert [first(sample)["dropped"] for _ in range(50)] == [second(sample)["dropped"] for _ in range(50)]
    with pytest.raises(ValueError, match="sum to <= 1"):
        ModalityDropout({"visible": 0.6, "infrared": 0.6})
    with pytest.raises(ValueError, match="at least two modalities"):
        ModalityDropout({"visible": 0.5})


def test_modality_dropout_on_a_batch_of_tensors():
    drop = ModalityDropout({"visible": 0.5, "infrared": 0.5}, seed=1)
    batch = {"visible": torch.ones(64, 3, 8, 8), "infrared": torch.ones(64, 1, 8, 8)}
    out = drop.batch(batch)
    hit_v, hit_i = out["dropped"]["visible"], out["dropped"]["infrared"]
    assert hit_v.dtype == torch.bool and not (hit_v & hit_i).any() and (hit_v | hit_i).all()  # sum(p) = 1
    assert (out["visible"][hit_v] == 0).all() and (out["visible"][~hit_v] == 1).all()
    assert (out["infrared"][hit_i] == 0).all() and (out["infrared"][~hit_i] == 1).all()
    assert 10 < int(hit_v.sum()) < 54


def test_cross_modal_mixup_shares_one_lambda_on_a_pair():
    mix = CrossModalMixup(["visible", "infrared"], alpha=0.4, num_classes=4, masks=["segmentation"], seed=0)
    g = np.random.default_rng(0)
    s1 = {"visible": g.random((8, 8, 3)).astype(np.float32), "infrared": g.random((8, 8)).astype(np.float32),
          "segmentation": np.ones((8, 8), np.float32), "label": 1}
    s2 = {"visible": g.random((8, 8, 3)).astype(np.float32), "infrared": g.random((8, 8)).astype(np.float32),
          "segmentation": np.zeros((8, 8), np.float32), "label": 3}
    out = mix.pair(s1, s2)
    lam = out["mixup_lambda"]
    assert 0.0 <= lam <= 1.0
    for k in ("visible", "infrared"):
        np.testing.assert_allclose(out[k], lam * s1[k] + (1 - lam) * s2[k], rtol=1e-6)
    np.testing.assert_allclose(out["segmentation"], np.full((8, 8), lam), rtol=1e-6)  # soft rule
    np.testing.assert_allclose(out["label"].numpy(), [0, lam, 0, 1 - lam], rtol=1e-6)
    dominant = CrossModalMixup(["visible"], num_classes=4, masks=["segmentation"], mask_mode="dominant", seed=0)
    out = dominant.pair(s1, s2)
    assert np.array_equal(out["segmentation"], s1["segmentation"] if out["mixup_lambda"] >= 0.5 else s2["segmentation"])


def test_cross_modal_mixup_on_a_batch_mixes_each_sample_with_its_partner():
    mix = CrossModalMixup(["visible", "infrared"], alpha=1.0, num_classes=3, masks=["segmentation"],
                          mask_mode="dominant", seed=2)
    g = torch.Generator().manual_seed(0)
    batch = {"visible": torch.rand(6, 3, 4, 4, generator=g), "infrared": torch.rand(6, 1, 4, 4, generator=g),
             "segmentation": torch.randint(0, 2, (6, 4, 4), generator=g), "label": torch.tensor([0, 1, 2, 0, 1, 2])}
    out = mix(batch)
    lam, index = out["mixup_lambda"], out["mixup_index"]
    assert lam.shape == (6,) and sorted(index.tolist()) == list(range(6))
    for i in range(6):
        j = int(index[i])
        for k in ("visible", "infrared"):
            torch.testing.assert_close(out[k][i], lam[i] * batch[k][i] + (1 - lam[i]) * batch[k][j])
        expected = torch.zeros(3)
        expected[batch["label"][i]] += lam[i]
        expected[batch["label"][j]] += 1 - lam[i]
        torch.testing.assert_close(out["label"][i], expected)
        assert torch.equal(out["segmentation"][i], batch["segmentation"][i] if lam[i] >= 0.5 else batch["segmentation"][j])


class _Pairs(Dataset):
    def __init__(self, aug: MultiModalCompose) -> None:
        self.aug = aug

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict:
        sample = {k: v for k, v in marked_sample().items() if k in MODALITIES}
        out = self.aug(**sample)
        return {k: torch.from_numpy(np.ascontiguousarray(out[k]).astype(np.float32)) for k in MODALITIES} | \
            {"dropped": out["dropped"]}


def test_works_in_dataloader_workers_reproducibly_and_differently_per_worker():
    def batches():
        aug = MultiModalCompose(MODALITIES, [A.RandomCrop(40, 40)], after=[ModalityDropout(
            {"visible": 0.25, "infrared": 0.25}, seed=5)], seed=11)
        return list(DataLoader(_Pairs(aug), batch_size=4, num_workers=2))

    first, second = batches(), batches()
    assert len(first) == 2 and first[0]["visible"].shape == (4, 40, 40, 3)
    for a, b in zip(first, second):
        for k in MODALITIES:
            assert torch.equal(a[k], b[k])
        assert torch.equal(a["dropped"]["visible"], b["dropped"]["visible"])
    # worker 0 produced batch 0 and worker 1 batch 1: their random crops are not copies of each other
    where = [[tuple(centroid(m.numpy()).round(2)) for m in batch["segmentation"]] for batch in first]
    assert where[0] != where[1]


def test_to_dict_and_from_dict_rebuild_the_same_pipeline():
    aug = MultiModalCompose(MODALITIES, [A.RandomCrop(48, 48), A.HorizontalFlip()],
                            {"visible": [A.RandomBrightnessContrast(p=1.0)]}, bbox_params=BBOX,
                            after=[ModalityDropout({"visible": 0.3, "infrared": 0.3}, seed=4)], seed=9)
    data = json.loads(json.dumps(aug.to_dict()))
    again = MultiModalCompose.from_dict(data)
    assert again.modalities == aug.modalities and again.bbox_params.format == "pascal_voc"
    a, b = aug(**marked_sample()), again(**marked_sample())
    for k in MODALITIES:
        assert np.array_equal(a[k], b[k])
    assert a["bboxes"] == b["bboxes"] and a["dropped"] == b["dropped"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batch_transforms_on_cuda_tensors():
    batch = {"visible": torch.rand(8, 3, 16, 16, device="cuda"), "infrared": torch.rand(8, 1, 16, 16, device="cuda"),
             "label": torch.arange(8, device="cuda") % 4}
    out = CrossModalMixup(["visible", "infrared"], num_classes=4, seed=0)(batch)
    assert out["visible"].device.type == "cuda" and out["label"].shape == (8, 4)
    dropped = ModalityDropout({"visible": 0.5, "infrared": 0.5}, seed=0).batch(out)
    assert dropped["dropped"]["visible"].device.type == "cuda"


def test_example_tool_builds_a_batch_and_a_picture(exported, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from cyclecmda.data.demo import generate_demo_data

    generate_demo_data(tmp_path / "demo", n_train=4, n_test=1, size=32)
    tool = Path(__file__).parents[1] / "tools" / "figures" / "multimodal_example.py"
    out = subprocess.run([sys.executable, str(tool), "--artifact", str(exported / "a2b"), "--demo",
                          str(tmp_path / "demo"), "--out", str(tmp_path / "grid.png"), "--n", "4", "--workers", "2"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["batch"]["visible"]["shape"] == [4, 3, 28, 28]
    assert report["batch"]["infrared"]["shape"] == [4, 1, 28, 28]
    assert report["batch"]["segmentation"]["shape"] == [4, 28, 28]
    lo, hi = report["translator_output_range"]  # raw counts of the thermal camera, noise aside
    margin = 0.1 * (hi - lo)
    assert lo - margin <= report["infrared_raw_range"][0] <= report["infrared_raw_range"][1] <= hi + margin
    import cv2

    grid = cv2.imread(str(tmp_path / "grid.png"))
    assert grid is not None and grid.shape[0] > grid.shape[1] / 6 * 4 * 0.9  # 4 rows of 6 cells
    title = grid[:40]
    columns = np.array_split((title < 128).all(axis=2), 6, axis=1)
    assert all(column.sum() > 20 for column in columns)  # a title over each column


def test_translation_tool_shows_each_class_beside_its_real_thermal_frame(exported, tmp_path):
    import csv
    import subprocess
    import sys
    from pathlib import Path

    import cv2

    from cyclecmda.data.demo import generate_demo_data

    generate_demo_data(tmp_path / "demo", n_train=4, n_test=12, size=32)
    tool = Path(__file__).parents[1] / "tools" / "figures" / "translation_example.py"
    out = subprocess.run([sys.executable, str(tool), "--artifact", str(exported / "a2b"), str(exported / "a2b"),
                          "--title", "first", "second", "--demo", str(tmp_path / "demo"), "--per-class", "1",
                          "--out", str(tmp_path / "t.png")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    with open(tmp_path / "demo" / "testA" / "labels.csv", newline="") as f:
        entries = [(row["filename"], row["class_name"]) for row in csv.DictReader(f)]
    first_of_each = {}
    for name, label in entries:
        first_of_each.setdefault(label, name)
    assert [(r["file"], r["class"]) for r in report["rows"]] == [(n, c) for c, n in first_of_each.items()]
    picture = cv2.imread(str(tmp_path / "t.png"))
    rows, columns = len(report["rows"]), 4  # visible, two translations, real thermal
    assert picture.shape[0] - 40 == rows * 36 * 3 and picture.shape[1] == columns * 36 * 3
    title = picture[:40]
    assert all(c.sum() > 20 for c in np.array_split((title < 128).all(axis=2), columns, axis=1))
    cells = np.array_split(picture[40:40 + 36 * 3], columns, axis=1)
    assert np.array_equal(cells[1], cells[2])  # the same artifact twice: the same translation
    assert not np.array_equal(cells[2], cells[3])  # the real thermal frame is not the translation

    bad = subprocess.run([sys.executable, str(tool), "--artifact", str(exported / "a2b"), "--title", "a", "b",
                          "--demo", str(tmp_path / "demo")], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "--title gives 2 titles for 1 artifacts" in bad.stderr
