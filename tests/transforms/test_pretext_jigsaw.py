"""Jigsaw puzzles (Noroozi & Favaro 2016): the permutation set against the naive greedy algorithm,
tiles cut from their cells in permuted order, per-tile normalisation."""

import itertools
import math

import pytest
import torch

from selfsup.errors import ConfigError
from selfsup.transforms.pretext import greedy_permutation_set, normalize_tiles, sample_jigsaw_tiles


# Tiny tensors: a second intra-op thread only adds synchronisation (conftest.single_thread).
pytestmark = pytest.mark.usefixtures("single_thread")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def naive_greedy(candidates, first, count):
    """Noroozi & Favaro's Algorithm 1 with the max-min criterion, with explicit loops."""
    chosen = [first]
    while len(chosen) < count:
        best, best_distance = None, -1
        for j, candidate in enumerate(candidates):
            if j in chosen:
                continue
            distance = min(sum(a != b for a, b in zip(candidate, candidates[c])) for c in chosen)
            if distance > best_distance:
                best, best_distance = j, distance
        chosen.append(best)
    return [candidates[j] for j in chosen]


def hamming(a, b):
    return int((a != b).sum())


@pytest.fixture(scope="module")
def hundred_permutations():
    return greedy_permutation_set(100, 9, seed=0)


def test_permutation_set_min_distance_is_what_greedy_promises(hundred_permutations):
    perms, added_at = hundred_permutations
    assert perms.shape == (100, 9) and perms.dtype == torch.int64
    assert (perms.sort(dim=1).values == torch.arange(9)).all()  # every row is a permutation
    pairwise = (perms[:, None, :] != perms[None, :, :]).sum(dim=2)
    pairwise.fill_diagonal_(9)
    # Max-min greedy: distances at addition never increase, and the last is the set's minimum.
    assert (added_at[1:] <= added_at[:-1]).all()
    assert int(pairwise.min()) == int(added_at[-1])
    for k in (1, 17, 99):  # each permutation was added at its minimum distance to the earlier ones
        assert min(hamming(perms[k], perms[j]) for j in range(k)) == int(added_at[k])
    # Covering bound: after N picks every permutation is within d of the set, so N·|ball(d)| >= 9!
    # (ball sizes from derangement numbers); the set's minimum distance is at least that d.
    derangements = [1, 0, 1, 2, 9, 44, 265, 1854, 14833, 133496]
    ball = [sum(math.comb(9, k) * derangements[k] for k in range(r + 1)) for r in range(10)]
    bound = next(r for r in range(10) if 100 * ball[r] >= math.factorial(9))
    assert bound == 5 and int(pairwise.min()) >= bound


def test_permutation_set_matches_the_naive_algorithm_and_is_seeded():
    perms, _ = greedy_permutation_set(8, num_tiles=5, seed=3)
    candidates = [tuple(p) for p in itertools.permutations(range(5))]
    expected = naive_greedy(candidates, candidates.index(tuple(perms[0].tolist())), 8)
    assert [tuple(p) for p in perms.tolist()] == expected
    assert torch.equal(greedy_permutation_set(8, 5, seed=3)[0], perms)
    assert not torch.equal(greedy_permutation_set(8, 5, seed=4)[0], perms)
    with pytest.raises(ConfigError, match="num_permutations=121 must be in \\[1, 120\\]"):
        greedy_permutation_set(121, num_tiles=5)


def test_jigsaw_tiles_come_from_their_cells_in_permuted_order(hundred_permutations):
    perms = hundred_permutations[0]
    images = torch.randn(6, 2, 30, 31)
    puzzle = sample_jigsaw_tiles(images, perms, tile_size=8, generator=gen())
    assert puzzle.tiles.shape == (6, 9, 2, 8, 8)
    assert torch.equal(puzzle.order, perms[puzzle.labels])
    cell = 10
    for b, slot in itertools.product(range(6), range(9)):
        source = int(puzzle.order[b, slot])  # grid cell the tile in this slot was cut from
        top, left = puzzle.origins[b, source].tolist()
        row, col = divmod(source, 3)
        assert row * cell <= top <= row * cell + cell - 8 and col * cell <= left <= col * cell + cell - 8
        assert torch.equal(puzzle.tiles[b, slot], images[b, :, top:top + 8, left:left + 8])
    # Undoing the permutation puts every tile back in reading order.
    inverse = torch.argsort(puzzle.order, dim=1)
    ordered = puzzle.tiles[torch.arange(6)[:, None], inverse]
    assert torch.equal(ordered[0, 4], images[0, :, puzzle.origins[0, 4, 0]:puzzle.origins[0, 4, 0] + 8,
                                             puzzle.origins[0, 4, 1]:puzzle.origins[0, 4, 1] + 8])
    with pytest.raises(ConfigError, match="tile_size=11"):
        sample_jigsaw_tiles(images, perms, tile_size=11)


def test_tiles_are_normalised_each_by_its_own_statistics():
    tiles = torch.randn(3, 9, 2, 5, 5) * torch.rand(3, 9, 1, 1, 1) * 5 + 7
    out = normalize_tiles(tiles, eps=0.0)
    for b, t in itertools.product(range(3), range(9)):
        tile = tiles[b, t]
        expected = (tile - tile.mean()) / tile.std(unbiased=False)
        assert torch.allclose(out[b, t], expected, atol=1e-4)
    assert torch.equal(normalize_tiles(torch.zeros(1, 1, 1, 4, 4)), torch.zeros(1, 1, 1, 4, 4))  # flat tiles stay 0
