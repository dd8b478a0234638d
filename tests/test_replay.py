"""The replay memory the task networks learn from: newest items kept, values kept to 8 bits,
state carried by checkpoints."""

from __future__ import annotations

import pytest
import torch

from cyclecmda.method.replay import ReplayMemory


def memory(capacity: int = 5) -> ReplayMemory:
    return ReplayMemory(capacity, {"image": (1, 2, 2)}, {"label": ()})


def batch(first: int, count: int):
    """Items whose image is filled with a value that encodes their number, labelled by it."""
    numbers = torch.arange(first, first + count)
    images = (numbers.float() / 10 - 1).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)
    return {"image": images, "label": numbers}


def test_the_newest_items_replace_the_oldest_and_samples_come_only_from_stored_items():
    mem = memory(5)
    with pytest.raises(RuntimeError, match="empty"):
        mem.sample(2)
    mem.add(**batch(0, 3))
    mem.add(**batch(3, 4))  # 7 items into 5 slots: 0 and 1 are gone
    assert len(mem) == 5
    torch.manual_seed(0)
    drawn = mem.sample(200)
    assert set(drawn["label"].tolist()) == {2, 3, 4, 5, 6}
    assert drawn["label"].dtype == torch.int64 and drawn["image"].shape == (200, 1, 2, 2)
    # an item's image stays with its label, to within one 8-bit step
    expected = drawn["label"].float() / 10 - 1
    assert torch.allclose(drawn["image"][:, 0, 0, 0], expected, atol=1 / 127.5)


def test_a_batch_larger_than_the_memory_keeps_its_last_items():
    mem = memory(3)
    mem.add(**batch(0, 7))
    torch.manual_seed(0)
    assert set(mem.sample(100)["label"].tolist()) == {4, 5, 6}


def test_targets_keep_the_ignore_values_and_images_are_clamped():
    mem = ReplayMemory(4, {"image": (1, 1, 1)}, {"mask": (1, 2)})
    mem.add(image=torch.tensor([[[[3.0]]]]), mask=torch.tensor([[[255, -1]]]))
    drawn = mem.sample(1)
    assert drawn["mask"].tolist() == [[[255, -1]]] and drawn["image"].item() == 1.0


def test_state_dict_restores_the_contents_and_where_the_next_item_goes():
    a = memory(4)
    a.add(**batch(0, 3))
    b = memory(4)
    b.load_state_dict(a.state_dict())
    assert len(b) == 3
    for mem in (a, b):
        mem.add(**batch(3, 2))  # fills slot 3, then replaces slot 0
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    torch.manual_seed(1)
    from_a = a.sample(50)
    torch.manual_seed(1)
    assert torch.equal(b.sample(50)["label"], from_a["label"])
    assert set(from_a["label"].tolist()) == {1, 2, 3, 4}


def test_draws_leave_torchs_random_numbers_alone_and_resume_from_the_state():
    torch.manual_seed(3)
    mem = memory(5)
    mem.add(**batch(0, 5))
    before = torch.random.get_rng_state()
    first = mem.sample(8)["label"].tolist()
    assert torch.equal(torch.random.get_rng_state(), before)  # the translator's numbers are untouched
    assert mem.sample(8)["label"].tolist() != first  # each draw is a new one
    copy = memory(5)
    copy.load_state_dict(mem.state_dict())  # a resumed run draws what the first would have drawn next
    assert copy.sample(8)["label"].tolist() == mem.sample(8)["label"].tolist()
    torch.manual_seed(4)
    other = memory(5)  # another run's seed, other draws
    other.add(**batch(0, 5))
    assert other.sample(8)["label"].tolist() != first
