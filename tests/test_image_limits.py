"""Images larger than the decode limit (data.max_image_pixels, --max-image-pixels) are unusable files."""

from __future__ import annotations

import struct
import warnings
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import make_images
from PIL import Image

from cyclecmda.cli import main
from cyclecmda.config import DataConfig, load_config
from cyclecmda.data.dataset import ResumableSampler, build_dataset, build_loader
from cyclecmda.data.images import MAX_IMAGE_PIXELS, probe_image, read_image
from cyclecmda.errors import ConfigError, DataError
from cyclecmda.export.translate import translate_folder
from cyclecmda.train.trainer import train


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose header says width x height RGB but whose pixel data is a few bytes of zeros."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_the_default_limit_is_pils_error_threshold():
    assert MAX_IMAGE_PIXELS == 2 * 89478485 == 2 * Image.MAX_IMAGE_PIXELS
    assert DataConfig().max_image_pixels == MAX_IMAGE_PIXELS
    assert load_config([], ["data.max_image_pixels=0"]).data.max_image_pixels == 0
    assert load_config([], ["data.max_image_pixels=null"]).data.max_image_pixels is None
    with pytest.raises(ConfigError, match=r"data\.max_image_pixels.*>= 0"):
        load_config([], ["data.max_image_pixels=-1"])


def test_an_oversized_header_is_a_data_error_naming_file_size_limit_and_setting(tmp_path):
    bomb = png_claiming(tmp_path / "mosaic.png", 14000, 14000)
    for read in (probe_image, read_image):
        with pytest.raises(DataError) as caught:
            read(bomb)
        message = str(caught.value)
        assert "\n" not in message and str(bomb) in message
        assert "196000000" in message and str(MAX_IMAGE_PIXELS) in message and "data.max_image_pixels" in message
    # the setting named in the message is the caller's; a raised limit lets the header through
    with pytest.raises(DataError, match="--max-image-pixels"):
        probe_image(bomb, max_pixels=1000, setting="--max-image-pixels")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning is not printed either
        assert probe_image(bomb, max_pixels=0).width == 14000
        assert probe_image(png_claiming(tmp_path / "big.png", 10000, 10000)).width == 10000
    with pytest.raises(DataError, match="cannot be decoded"):  # past the size check, the data is garbage
        read_image(bomb, max_pixels=None)


def test_training_skips_an_oversized_image_with_on_bad_file_skip(tiny_config):
    png_claiming(Path(tiny_config.data.a.root) / "mosaic.png", 14000, 14000)
    for scan in ("header", "none"):  # scan none: only the decoder in the data loader sees the file
        data = replace(tiny_config.data, on_bad_file="skip", scan=scan)
        cfg = replace(tiny_config, data=data, run=replace(tiny_config.run, name=f"skip_{scan}"))
        with pytest.warns(UserWarning, match=r"mosaic\.png.*196000000"):
            result = train(replace(cfg, train=replace(cfg.train, max_steps=3)))
        assert result.checkpoint.is_file()


def test_a_small_limit_refuses_files_that_a_raised_limit_accepts(tiny_config, capsys):
    base = [f"data.a.root={tiny_config.data.a.root}", f"data.b.root={tiny_config.data.b.root}",
            "data.b.channels=1", "data.b.bit_depth=16", "data.load_size=36", "data.crop_size=32",
            "data.num_workers=0"]
    with pytest.raises(DataError, match=r"(?s)48x40.*1920.*1000.*data\.max_image_pixels"):
        build_dataset(load_config([], [*base, "data.max_image_pixels=1000"]).data)
    assert len(build_dataset(load_config([], [*base, "data.max_image_pixels=2000"]).data)) == 5

    # without a header scan, the decoder checks the size itself, in DataLoader workers too
    data = load_config([], [*base, "data.max_image_pixels=1000", "data.scan=none", "data.num_workers=1",
                            "data.batch_size=1"]).data
    dataset = build_dataset(data)
    with pytest.raises(DataError, match=r"1920.*data\.max_image_pixels"):
        dataset[0]
    loader = build_loader(dataset, data, ResumableSampler(len(dataset)))
    with pytest.raises(Exception, match=r"1920.*data\.max_image_pixels"):
        next(iter(loader))

    rc = main(["train", *base, "data.max_image_pixels=1000", f"run.out_dir={tiny_config.run.out_dir}",
               "train.max_steps=1", "model.gen.arch=resnet_2blocks", "model.gen.ngf=8", "model.disc.ndf=8"])
    err = capsys.readouterr().err
    assert rc == 2 and "data.max_image_pixels" in err and "Traceback" not in err


def test_translate_reports_and_skips_an_oversized_image_and_has_its_own_limit(exported, tmp_path, capsys):
    src = tmp_path / "src"
    make_images(src, 3, 3, np.uint8)
    bomb = png_claiming(src / "mosaic.png", 14000, 14000)
    summary = translate_folder(exported / "a2b", src, tmp_path / "out", progress=False)
    assert (summary["translated"], summary["skipped"]) == (3, 1)
    assert "196000000" in summary["skipped_files"][str(bomb)]
    assert "--max-image-pixels" in summary["skipped_files"][str(bomb)]
    assert f"warning: skipped {bomb}" in capsys.readouterr().err

    bomb.unlink()
    assert main(["translate", str(exported / "a2b"), str(src), str(tmp_path / "small"),
                 "--max-image-pixels", "1000"]) == 1
    out, err = capsys.readouterr()
    assert "translated 0, skipped 3" in out and "--max-image-pixels" in err
    assert main(["translate", str(exported / "a2b"), str(src), str(tmp_path / "big"),
                 "--max-image-pixels", "2000"]) == 0
    assert "translated 3, skipped 0" in capsys.readouterr().out


def test_opencvs_own_size_limit_is_a_data_error_naming_its_variable(tmp_path, monkeypatch):
    import cv2

    path = make_images(tmp_path, 1, 1, np.uint8)[0]

    def refuse(*args, **kwargs):
        raise cv2.error("OpenCV(5.0.0) loadsave.cpp:79: error: (-215:Assertion failed) "
                        "pixels <= CV_IO_MAX_IMAGE_PIXELS in function 'validateInputImageSize'\n")

    monkeypatch.setattr(cv2, "imdecode", refuse)
    with pytest.raises(DataError, match=r"img_000\.png.*OPENCV_IO_MAX_IMAGE_PIXELS"):
        read_image(path, max_pixels=0)


@pytest.mark.parametrize("size", [0, 3])
def test_an_empty_or_few_byte_file_is_an_unreadable_image(tmp_path, size):
    path = tmp_path / "frame.png"
    path.write_bytes(b"\x89PN"[:size])
    for read in (probe_image, read_image):
        with pytest.raises(DataError) as caught:
            read(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and "\n" not in message, message
        assert "not a readable image" in message or "cannot be decoded" in message, message
        if size == 0:
            assert message == f"{path}: not a readable image (empty file, 0 bytes)."


def test_training_skips_an_empty_image_file_with_on_bad_file_skip_and_names_it_otherwise(tiny_config):
    empty = Path(tiny_config.data.a.root) / "empty.png"
    empty.write_bytes(b"")
    with pytest.warns(UserWarning, match=r"empty\.png.*empty file, 0 bytes"):
        dataset = build_dataset(replace(tiny_config.data, on_bad_file="skip"))
    assert len(dataset.a) == 5 and empty not in dataset.a.files
    with pytest.raises(DataError, match=r"empty\.png.*empty file, 0 bytes"):
        build_dataset(tiny_config.data)


def test_translate_skips_an_empty_image_file_with_a_warning(exported, tmp_path, capsys):
    src = tmp_path / "src"
    make_images(src, 2, 3, np.uint8)
    empty = src / "empty.png"
    empty.write_bytes(b"")
    assert main(["translate", str(exported / "a2b"), str(src), str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert "translated 2, skipped 1" in out and "Traceback" not in err
    assert f"warning: skipped {empty}: not a readable image (empty file, 0 bytes)." in err
    assert main(["translate", str(exported / "a2b"), str(empty), str(tmp_path / "out2")]) == 1
    assert "translated 0, skipped 1" in capsys.readouterr().out
