from __future__ import annotations

import warnings
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from helpers import make_images
from PIL import Image

from cyclecmda.config import load_config
from cyclecmda.data.dataset import ResumableSampler, UnpairedDataset, build_dataset, build_loader
from cyclecmda.data.domain import list_images
from cyclecmda.data.images import convert_channels, probe_image, read_image, to_channels, write_image
from cyclecmda.errors import DataError


def data_cfg(a: Path, b: Path, *extra: str):
    return load_config([], [f"data.a.root={a}", f"data.b.root={b}", "data.load_size=36",
                            "data.crop_size=32", "data.num_workers=0", *extra]).data


# --- files -------------------------------------------------------------------------------

def test_list_images_from_folder_glob_and_list_file(tmp_path):
    make_images(tmp_path / "d" / "sub", 2, 3, np.uint8)
    make_images(tmp_path / "d", 1, 3, np.uint8, ext=".jpg")
    (tmp_path / "d" / "notes.txt").write_text("not an image")
    exts = [".png", ".jpg"]
    assert len(list_images(str(tmp_path / "d"), exts)) == 3
    assert len(list_images(str(tmp_path / "d" / "**" / "*.png"), exts)) == 2
    listing = tmp_path / "d" / "files.txt"
    listing.write_text("# my split\nsub/img_000.png\n\nimg_000.jpg\n")
    assert list_images(str(listing), exts) == sorted([tmp_path / "d" / "sub" / "img_000.png", tmp_path / "d" / "img_000.jpg"])


def test_missing_empty_and_broken_locations_are_named(tmp_path):
    with pytest.raises(DataError, match=r"data\.a\.root.*nowhere.*does not exist"):
        list_images(str(tmp_path / "nowhere"), [".png"], "data.a.root")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"data\.b\.root.*holds no images.*\.png"):
        list_images(str(tmp_path / "empty"), [".png"], "data.b.root")
    listing = tmp_path / "list.txt"
    listing.write_text("gone.png\n")
    with pytest.raises(DataError, match=r"gone\.png"):
        list_images(str(listing), [".png"])
    with pytest.raises(DataError, match="not set"):
        list_images("", [".png"], "data.a.root")


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif", ".bmp", ".webp"])
@pytest.mark.parametrize("channels", [1, 3])
def test_decodes_every_format_8bit(tmp_path, ext, channels):
    img = np.random.default_rng(0).integers(0, 255, (24, 30, channels), dtype=np.uint8)
    path = write_image(tmp_path / f"x{ext}", img)
    out = read_image(path)
    stored = 3 if ext == ".webp" else channels  # WebP has no gray mode: stored as RGB
    assert out.dtype == np.uint8 and out.shape == (24, 30, stored)
    info = probe_image(path)
    assert (info.width, info.height, info.channels, info.bit_depth) == (30, 24, stored, 8)
    if ext in (".png", ".tif", ".bmp"):  # lossless
        np.testing.assert_array_equal(out, img)


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("channels", [1, 3])
def test_decodes_16bit_without_clipping(tmp_path, ext, channels):
    img = np.random.default_rng(1).integers(0, 65535, (16, 20, channels), dtype=np.uint16)
    path = write_image(tmp_path / f"x{ext}", img)
    out = read_image(path)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, img)
    assert probe_image(path).bit_depth == 16 and probe_image(path).channels == channels


def test_channel_conversion():
    rgb = np.zeros((2, 2, 3), np.uint16)
    rgb[..., 0] = 1000
    gray = to_channels(rgb, 1)
    assert gray.shape == (2, 2, 1) and gray.dtype == np.uint16 and gray[0, 0, 0] == 299
    rgba = np.dstack([rgb, np.full((2, 2), 7, np.uint16)])
    np.testing.assert_array_equal(to_channels(rgba, 3), rgb)
    np.testing.assert_array_equal(to_channels(gray, 3), np.repeat(gray, 3, axis=2))


# --- dataset ---------------------------------------------------------------------------

def test_sixteen_bit_round_trip_keeps_more_than_256_levels(tmp_path):
    ramp = np.linspace(1000, 60000, 40 * 48).reshape(40, 48, 1).astype(np.uint16)
    for i in range(2):
        write_image(tmp_path / "b" / f"{i}.png", ramp)
    a = tmp_path / "a"
    make_images(a, 2, 3, np.uint8)
    cfg = data_cfg(a, tmp_path / "b", "data.b.channels=1", "data.b.bit_depth=16", "data.flip=false",
                   "data.load_size=32")
    sample = build_dataset(cfg)[0]["b"]
    assert sample.shape == (1, 32, 32) and sample.dtype == torch.float32
    assert len(torch.unique(sample)) > 256
    # full-range scaling is linear in raw counts: back to counts with the same mapping
    counts = (sample + 1) / 2 * 65535
    assert counts.min() > 900 and counts.max() < 60100


def test_fixed_and_percentile_scaling(tmp_path):
    b = tmp_path / "b"
    for i in range(3):
        write_image(b / f"{i}.png", np.full((32, 32, 1), 1000 + 1000 * i, np.uint16))
    a = tmp_path / "a"
    make_images(a, 1, 3, np.uint8)
    common = ("data.b.channels=1", "data.b.bit_depth=16", "data.flip=false", "data.load_size=32",
              "data.serial_batches=true")
    fixed = build_dataset(data_cfg(a, b, *common, "data.b.scale.mode=fixed", "data.b.scale.min=1000",
                                   "data.b.scale.max=3000"))
    assert [fixed[i]["b"].mean().item() for i in range(3)] == pytest.approx([-1.0, 0.0, 1.0])
    pct = build_dataset(data_cfg(a, b, *common, "data.b.scale.mode=percentile", "data.b.scale.low_percentile=0",
                                 "data.b.scale.high_percentile=100"))
    assert (pct.b.value_range.lo, pct.b.value_range.hi) == (1000.0, 3000.0)


def test_unpaired_dataset_shapes_lengths_and_serial_b(rgb8_dir, gray16_dir):
    cfg = data_cfg(rgb8_dir, gray16_dir, "data.b.channels=1", "data.b.bit_depth=16")
    ds = build_dataset(cfg, seed=3)
    assert len(ds) == 5  # the larger domain
    item = ds[4]
    assert item["a"].shape == (3, 32, 32) and item["b"].shape == (1, 32, 32)
    assert -1.0 <= item["a"].min() and item["a"].max() <= 1.0
    assert item["a_path"].endswith("img_004.png")
    assert torch.equal(ds[(2, 1)]["a"], ds[(2, 1)]["a"])  # a pure function of (epoch, index)
    serial = build_dataset(data_cfg(rgb8_dir, gray16_dir, "data.b.channels=1", "data.b.bit_depth=16",
                                    "data.serial_batches=true"))
    assert [Path(serial[i]["b_path"]).name for i in range(5)] == [f"img_{i % 4:03d}.png" for i in range(5)]
    assert [Path(serial[(3, i)]["b_path"]).name for i in range(5)] == [f"img_{i % 4:03d}.png" for i in range(5)]


def b_partners(ds: UnpairedDataset, epoch: int) -> List[int]:
    """The index of the B file drawn beside each A index of an epoch."""
    return [ds.b.files.index(Path(ds[(epoch, i)]["b_path"])) for i in range(len(ds))]


def test_b_partners_are_random_per_epoch_and_a_pure_function_of_seed_epoch_index(tmp_path):
    make_images(tmp_path / "a", 12, 3, np.uint8, size=32)
    make_images(tmp_path / "b", 6, 3, np.uint8, size=32, seed=1)
    cfg = data_cfg(tmp_path / "a", tmp_path / "b", "data.load_size=32")
    ds = build_dataset(cfg, seed=3)
    serial = [i % 6 for i in range(12)]
    epochs = [b_partners(ds, e) for e in range(4)]
    for partners in epochs:
        assert partners != serial  # not paired in order
        assert len(set(partners)) >= 3  # varied within an epoch
        assert set(partners) <= set(range(6))
    assert len({tuple(p) for p in epochs}) == 4  # a new draw every epoch
    # the same (seed, epoch, index) gives the same partner: on a second call, in a rebuilt
    # dataset, through set_epoch, and in DataLoader workers; another seed draws others
    assert b_partners(ds, 2) == epochs[2]
    assert b_partners(build_dataset(cfg, seed=3), 2) == epochs[2]
    ds.set_epoch(2)
    assert [ds.b.files.index(Path(ds[i]["b_path"])) for i in range(12)] == epochs[2]
    assert b_partners(build_dataset(cfg, seed=4), 2) != epochs[2]
    for workers in (0, 2):
        cfg.num_workers = workers
        sampler = ResumableSampler(len(ds), shuffle=False)
        sampler.set_epoch(2)
        loaded = [p for batch in build_loader(build_dataset(cfg, seed=3), cfg, sampler, drop_last=False)
                  for p in batch["b_path"]]
        assert [ds.b.files.index(Path(p)) for p in loaded] == epochs[2], f"num_workers={workers}"


def test_gray_and_colour_convert_to_configured_channels(rgb8_dir, gray8_dir):
    ds = build_dataset(data_cfg(gray8_dir, rgb8_dir, "data.a.channels=3", "data.b.channels=1"))
    assert ds[0]["a"].shape[0] == 3 and ds[0]["b"].shape[0] == 1
    assert torch.equal(ds[0]["a"][0], ds[0]["a"][2])  # gray replicated


def test_pipeline_from_config_transforms(rgb8_dir, gray8_dir):
    cfg = data_cfg(rgb8_dir, gray8_dir, "data.b.channels=1",
                   "data.a.transforms=[{name: CenterCrop, params: {height: 32, width: 32}},"
                   " {name: InvertImg, params: {p: 1.0}}]")
    ds = build_dataset(cfg)
    raw = read_image(Path(ds[0]["a_path"]))[4:36, 8:40]
    expected = 1.0 - raw.astype(np.float32) / 255.0
    np.testing.assert_allclose(ds[0]["a"].numpy().transpose(1, 2, 0), expected * 2 - 1, atol=1e-5)
    bad = data_cfg(rgb8_dir, gray8_dir, "data.b.channels=1",
                   "data.a.transforms=[{name: CenterCrop, params: {height: 20, width: 20}}]")
    with pytest.raises(DataError, match=r"20x20.*crop_size is 32"):
        build_dataset(bad)[0]


def test_dataloader_workers_give_the_same_batches(rgb8_dir, gray16_dir):
    cfg = data_cfg(rgb8_dir, gray16_dir, "data.b.channels=1", "data.b.bit_depth=16", "data.batch_size=2")
    ds = build_dataset(cfg, seed=1)
    results = []
    for workers in (0, 2):
        cfg.num_workers = workers
        sampler = ResumableSampler(len(ds), shuffle=True, seed=1)
        sampler.set_epoch(3)
        loader = build_loader(ds, cfg, sampler, drop_last=False)
        results.append(list(loader))
    assert len(results[0]) == 3
    for x, y in zip(*results):
        assert torch.equal(x["a"], y["a"]) and torch.equal(x["b"], y["b"]) and x["b_path"] == y["b_path"]


def test_resumable_sampler_shards_and_resumes():
    s = ResumableSampler(10, shuffle=True, seed=5)
    s.set_epoch(2)
    full = list(s)
    assert sorted(i for _, i in full) == list(range(10)) and all(e == 2 for e, _ in full)
    s.set_epoch(2, start=4)
    assert list(s) == full[4:] and len(s) == 6
    s.set_epoch(3)
    assert list(s) != full
    ranks = [ResumableSampler(9, seed=5, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(0)
    seen = [i for r in ranks for _, i in r]
    assert len(seen) == 10 and set(seen) == set(range(9))  # padded to equal shares


# --- bad data ----------------------------------------------------------------------------

def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_unreadable_file_named_before_training(rgb8_dir, gray8_dir):
    (rgb8_dir / "broken.png").write_text("this is not a png")
    with pytest.raises(DataError, match=r"(?s)data\.a: 1 of 6.*broken\.png.*not a readable image.*on_bad_file=skip"):
        build_dataset(data_cfg(rgb8_dir, gray8_dir, "data.b.channels=1"))


def test_truncated_file_found_by_full_scan_and_named_at_load(rgb8_dir, gray8_dir):
    bad = _truncate(rgb8_dir / "img_002.png")
    with pytest.raises(DataError, match=r"img_002\.png.*truncated"):
        build_dataset(data_cfg(rgb8_dir, gray8_dir, "data.b.channels=1", "data.scan=full"))
    ds = build_dataset(data_cfg(rgb8_dir, gray8_dir, "data.b.channels=1", "data.scan=header"))
    with pytest.raises(DataError, match=str(bad.name)):
        ds[2]


def test_bit_depth_and_channel_mismatch_named(rgb8_dir, gray16_dir, tmp_path):
    with pytest.raises(DataError, match=r"16-bit image but data\.b\.bit_depth is 8.*data\.b\.bit_depth=16"):
        build_dataset(data_cfg(rgb8_dir, gray16_dir, "data.b.channels=1"))
    cmyk = tmp_path / "cmyk"
    cmyk.mkdir()
    Image.new("CMYK", (8, 8)).save(cmyk / "print.jpg")
    with pytest.raises(DataError, match=r"print\.jpg.*'CMYK' is not supported"):
        build_dataset(data_cfg(rgb8_dir, cmyk))
    floats = tmp_path / "float"
    write_image(floats / "radiance.tif", np.zeros((8, 8, 1), np.float32))
    with pytest.raises(DataError, match=r"radiance\.tif.*32-bit.*8 or 16 bit"):
        build_dataset(data_cfg(rgb8_dir, floats))


def test_skip_mode_skips_and_counts_with_a_warning(rgb8_dir, gray8_dir):
    (rgb8_dir / "broken.png").write_text("junk")
    _truncate(rgb8_dir / "img_001.png")
    with pytest.warns(UserWarning, match="skipping 1 unusable"):
        ds = build_dataset(data_cfg(rgb8_dir, gray8_dir, "data.b.channels=1", "data.on_bad_file=skip"))
    assert len(ds.a) == 5 and len(ds.a.skipped) == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [ds[i] for i in range(len(ds))]
    assert all(not item["a_path"].endswith("img_001.png") for item in items)
    assert len(ds.a.skipped) == 2 and any("img_001.png" in str(w.message) for w in caught)


def test_tensor_channel_conversion_matches_the_array_conversion():
    """The networks' 3 <-> 1 conversion (identity loss, augmentation) agrees with the loader's BT.601 luma."""
    rgb = np.random.default_rng(0).integers(0, 65536, (8, 8, 3)).astype(np.uint16)
    x = torch.from_numpy(rgb.astype(np.float32) / 65535).permute(2, 0, 1)[None]
    gray = convert_channels(x, 1)
    assert gray.shape == (1, 1, 8, 8)
    expected = torch.from_numpy(to_channels(rgb, 1)[:, :, 0].astype(np.float32) / 65535)
    torch.testing.assert_close(gray[0, 0], expected, atol=1 / 65535, rtol=0)
    assert convert_channels(gray, 3).shape == (1, 3, 8, 8)
    assert torch.equal(convert_channels(torch.ones(1, 4, 2, 2), 3), torch.ones(1, 3, 2, 2))  # alpha dropped
