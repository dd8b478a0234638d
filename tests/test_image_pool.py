"""The image pool: published behaviour, detachment, and exact checkpoint round trips."""

from __future__ import annotations

import io
from collections import Counter
from typing import List

import pytest
import torch

from cyclecmda.errors import ConfigError
from cyclecmda.method.image_pool import ImagePool


class Labels:
    """Batches of constant images, each labelled by its value, so outputs can be traced."""

    def __init__(self) -> None:
        self.next = 0

    def batch(self, n: int) -> torch.Tensor:
        values = torch.arange(self.next, self.next + n, dtype=torch.float32)
        self.next += n
        return values.view(n, 1, 1, 1).expand(n, 2, 3, 3).clone()


def labels(images: torch.Tensor) -> List[int]:
    return [int(v) for v in images[:, 0, 0, 0].tolist()]


def pool_labels(pool: ImagePool) -> List[int]:
    return [int(im[0, 0, 0]) for im in pool.images]


def test_size_zero_returns_input_unchanged():
    pool = ImagePool(0)
    x = torch.randn(3, 1, 4, 4, requires_grad=True)
    assert pool.query(x) is x
    assert len(pool) == 0
    assert pool.state_dict()["size"] == 0


def test_fills_then_mixes_stored_and_new():
    gen = torch.Generator().manual_seed(0)
    pool = ImagePool(4, gen)
    src = Labels()
    first = src.batch(3)
    assert torch.equal(pool.query(first), first)  # filling: returned as is
    out = pool.query(src.batch(2))  # one fills the pool, the other goes through the 50/50 draw
    assert len(pool) == 4 and out.shape == (2, 2, 3, 3)

    returned_old = returned_new = 0
    for _ in range(40):
        before = Counter(pool_labels(pool))
        batch = src.batch(3)
        out = pool.query(batch)
        new = set(labels(batch))
        # every image comes out exactly once: pool + output = old pool + input
        assert Counter(pool_labels(pool)) + Counter(labels(out)) == before + Counter(labels(batch))
        assert len(pool) == 4
        for label in labels(out):
            if label in new:
                returned_new += 1
            else:
                assert label in before
                returned_old += 1
    assert returned_old + returned_new == 120
    assert 40 <= returned_old <= 80  # probability 0.5 each


def test_output_and_storage_are_detached_copies():
    pool = ImagePool(2, torch.Generator().manual_seed(0))
    x = torch.randn(2, 1, 4, 4, requires_grad=True) * 1.0
    out = pool.query(x)
    assert not out.requires_grad
    assert all(not im.requires_grad for im in pool.images)
    stored = [im.clone() for im in pool.images]
    with torch.no_grad():
        x.zero_()
    assert all(torch.equal(a, b) for a, b in zip(pool.images, stored))


def test_returned_images_take_the_query_dtype():
    pool = ImagePool(2, torch.Generator().manual_seed(1))
    pool.query(torch.ones(2, 1, 2, 2, dtype=torch.float64))
    outs = [pool.query(torch.zeros(2, 1, 2, 2, dtype=torch.float32)) for _ in range(6)]
    assert all(o.dtype == torch.float32 for o in outs)
    assert any(o.sum() > 0 for o in outs)  # some stored (float64) images came back


def run(pool: ImagePool, src: Labels, steps: int) -> List[List[int]]:
    return [labels(pool.query(src.batch(2))) for _ in range(steps)]


def test_state_dict_round_trip_reproduces_future_outputs():
    pool = ImagePool(5, torch.Generator().manual_seed(123))
    src = Labels()
    run(pool, src, 6)

    buffer = io.BytesIO()
    torch.save(pool.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["size"] == 5 and state["images"].shape == (5, 2, 3, 3)

    resumed = ImagePool(5, torch.Generator().manual_seed(999))  # state comes from the checkpoint
    resumed.load_state_dict(state)
    assert pool_labels(resumed) == pool_labels(pool)
    start = src.next
    expected = run(pool, src, 10)
    src.next = start
    assert run(resumed, src, 10) == expected
    assert any(label < start for step in expected for label in step)  # stored images came back


def test_state_dict_round_trip_with_global_rng():
    torch.manual_seed(0)
    pool = ImagePool(3)
    src = Labels()
    run(pool, src, 4)
    state, rng = pool.state_dict(), torch.get_rng_state()
    assert "rng_state" not in state
    start = src.next
    expected = run(pool, src, 6)

    resumed = ImagePool(3)
    resumed.load_state_dict(state)
    torch.set_rng_state(rng)
    src.next = start
    assert run(resumed, src, 6) == expected


def test_empty_and_partial_state_round_trip():
    empty = ImagePool(4).state_dict()
    assert empty["size"] == 0 and empty["images"].numel() == 0
    pool = ImagePool(4)
    pool.load_state_dict(empty)
    assert len(pool) == 0

    partial = ImagePool(4, torch.Generator().manual_seed(0))
    partial.query(Labels().batch(2))
    restored = ImagePool(4, torch.Generator())
    restored.load_state_dict(partial.state_dict())
    assert pool_labels(restored) == [0, 1]
    restored.query(Labels().batch(2))
    assert len(restored) == 4


def test_loading_more_images_than_the_pool_holds_fails():
    big = ImagePool(4)
    big.query(torch.zeros(4, 1, 2, 2))
    with pytest.raises(ConfigError, match="4 images"):
        ImagePool(2).load_state_dict(big.state_dict())


def test_negative_size_rejected():
    with pytest.raises(ConfigError):
        ImagePool(-1)
