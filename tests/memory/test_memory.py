"""The key queue: FIFO order, fixed size, state kept in the state dict."""

import torch

from selfsup.memory import KeyQueue


def test_queue_is_fifo_with_fixed_size():
    queue = KeyQueue(size=5, dim=2)
    batches = [torch.full((2, 2), float(i)) for i in range(1, 5)]  # 8 keys through a queue of 5
    for keys in batches:
        queue.enqueue(keys)
    seen = torch.cat(batches)[:, 0]
    assert queue.keys().shape == (5, 2)
    assert torch.equal(queue.keys()[:, 0], seen[-5:])  # the 5 newest, oldest first
    assert int(queue.ptr) == 8 % 5


def test_queue_state_survives_a_state_dict_round_trip():
    queue = KeyQueue(size=4, dim=3)
    queue.enqueue(torch.ones(3, 3))
    restored = KeyQueue(size=4, dim=3)
    restored.load_state_dict(queue.state_dict())
    assert torch.equal(restored.keys(), queue.keys()) and int(restored.ptr) == 3


def test_a_batch_larger_than_the_queue_keeps_its_newest_keys():
    queue = KeyQueue(size=3, dim=1)
    queue.enqueue(torch.arange(5.0).view(5, 1))
    assert sorted(queue.stored[:, 0].tolist()) == [2.0, 3.0, 4.0]
