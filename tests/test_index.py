"""nhl.index against brute-force popcount search written here."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from nhl.index import INDEX_KINDS, MISSING_DISTANCE, FunnelIndex, HashIndex, pack_codes, pack_words, unpack_codes


def _codes(seed: int, n: int, bits: int) -> np.ndarray:
    return np.random.default_rng(seed).choice([-1.0, 1.0], size=(n, bits)).astype(np.float32)


def _clustered(seed: int, n: int, bits: int, centres: int = 6, flip: float = 0.15) -> np.ndarray:
    """Codes near a few centres: many equal prefixes, like a trained model's codes."""
    rng = np.random.default_rng(seed)
    base = rng.choice([-1.0, 1.0], size=(centres, bits))[rng.integers(0, centres, n)]
    return np.where(rng.random((n, bits)) < flip, -base, base).astype(np.float32)


def brute_distances(queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Hamming distances by XOR + popcount over bytes packed here with numpy's own bit order."""
    qb = np.packbits(queries > 0, axis=1)
    cb = np.packbits(codes > 0, axis=1)
    xor = qb[:, None, :] ^ cb[None, :, :]
    return np.unpackbits(xor, axis=2).sum(axis=2).astype(np.int64)


def brute_search(queries, codes, k):
    """Exact k-NN, ties broken by database order (stable)."""
    dist = brute_distances(queries, codes)
    ids = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, ids, axis=1), ids


def assert_matches_exact(queries, codes, distances, ids, k):
    """Distances equal the exact ones; ids are right up to ties."""
    exact_d, _ = brute_search(queries, codes, k)
    all_d = brute_distances(queries, codes)
    assert distances.tolist() == exact_d.tolist()
    for row in range(len(queries)):
        assert len(set(ids[row].tolist())) == k
        assert all_d[row, ids[row]].tolist() == distances[row].tolist()


# --------------------------------------------------------------------------- packing


@pytest.mark.parametrize("bits", [1, 7, 8, 13, 64, 70])
def test_pack_unpack_round_trip(bits):
    codes = _codes(bits, 9, bits)
    packed = pack_codes(codes)
    assert packed.dtype == np.uint8 and packed.shape == (9, -(-bits // 8))
    assert np.array_equal(unpack_codes(packed, bits), codes)


def test_bit_order_is_lsb_first_and_words_agree():
    bits = 70
    for j in range(bits):
        code = -np.ones((1, bits))
        code[0, j] = 1
        expected = np.zeros(9, np.uint8)
        expected[j // 8] = 1 << (j % 8)
        assert pack_codes(code)[0].tolist() == expected.tolist()
        words = pack_words(code)
        assert words.dtype == np.uint64 and words.shape == (1, 2)
        assert int(words[0, j // 64]) == 1 << (j % 64) and int(words[0, 1 - j // 64]) == 0


def test_pack_accepts_torch_and_rejects_non_pm1():
    codes = _codes(1, 4, 16)
    assert np.array_equal(pack_codes(torch.from_numpy(codes)), pack_codes(codes))
    with pytest.raises(ValueError, match="only -1 and \\+1"):
        pack_codes(np.zeros((2, 8)))
    with pytest.raises(ValueError, match="2-D"):
        pack_codes(np.ones(8))
    with pytest.raises(ValueError, match="packed"):
        unpack_codes(np.zeros((2, 3), np.uint8), 8)


# --------------------------------------------------------------------------- HashIndex


@pytest.mark.parametrize(
    "kind, params",
    [
        ("flat", {}),
        ("ivf", {"nlist": 4, "nprobe": 4}),  # every list probed: exhaustive
        ("hash", {"b": 8, "nflip": 8}),  # every bucket probed: exhaustive
        ("multihash", {"nhash": 2, "b": 8, "nflip": 8}),
    ],
)
@pytest.mark.parametrize("bits", [16, 20])
def test_index_matches_brute_force(kind, params, bits):
    codes = _clustered(2, 400, bits)
    queries = _codes(3, 12, bits)
    index = HashIndex(bits, kind, **params).add(codes[:250]).add(codes[250:])
    assert index.ntotal == 400
    distances, ids = index.search(queries, 10)
    assert distances.dtype == np.int32 and ids.dtype == np.int64
    assert_matches_exact(queries, codes, distances, ids, 10)


def test_index_pads_missing_results_and_empty_index():
    codes, queries = _codes(4, 3, 16), _codes(5, 2, 16)
    empty_d, empty_i = HashIndex(16).search(queries, 4)
    assert (empty_i == -1).all() and (empty_d == MISSING_DISTANCE).all()
    assert empty_d.shape == (2, 4)
    distances, ids = HashIndex(16).add(codes).search(queries, 5)
    assert (ids[:, 3:] == -1).all() and (distances[:, 3:] == MISSING_DISTANCE).all()
    assert_matches_exact(queries, codes, distances[:, :3], ids[:, :3], 3)


@pytest.mark.parametrize(
    "kind, params", [("flat", {}), ("ivf", {"nlist": 4, "nprobe": 2}), ("hash", {"b": 8, "nflip": 1})]
)
def test_index_save_load_round_trip(tmp_path, kind, params):
    codes, queries = _clustered(6, 300, 24), _codes(7, 5, 24)
    index = HashIndex(24, kind, **params).add(codes)
    path = tmp_path / "sub" / "index.npz"
    index.save(path)
    assert os.listdir(path.parent) == ["index.npz"]  # no temp file left behind
    loaded = HashIndex.load(path)
    assert (loaded.bits, loaded.kind, loaded.params, loaded.ntotal) == (24, kind, params, 300)
    for before, after in zip(index.search(queries, 7), loaded.search(queries, 7), strict=True):
        assert np.array_equal(before, after)


def test_index_errors():
    known = "unknown; known: \\['flat', 'hash', 'ivf', 'multihash'\\]"
    with pytest.raises(ValueError, match=known):
        HashIndex(16, "lsh")
    assert set(INDEX_KINDS) == {"flat", "ivf", "hash", "multihash"}
    with pytest.raises(ValueError, match="bad parameters"):
        HashIndex(16, "flat", nprobe=3)
    with pytest.raises(ValueError, match="expected 16 bits"):
        HashIndex(16).add(_codes(8, 3, 8))
    with pytest.raises(ValueError, match="nlist=64"):
        HashIndex(16, "ivf", nlist=64).add(_codes(8, 10, 16))
    with pytest.raises(ValueError, match="k: expected a positive"):
        HashIndex(16).search(_codes(8, 1, 16), 0)


def test_index_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        HashIndex.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a saved nhl.HashIndex"):
        HashIndex.load(tmp_path / "other.npz")


# --------------------------------------------------------------------------- FunnelIndex


@pytest.mark.parametrize("stages", [[8, 24, 70], [6, 70]])
def test_funnel_with_whole_database_pools_equals_exact_search(stages):
    codes = _clustered(9, 300, 70)
    queries = np.vstack([_codes(10, 6, 70), codes[:3]])
    index = FunnelIndex(codes, stages=stages, pools=[300] * (len(stages) - 1))
    distances, ids = index.search(queries, 15)
    exact_d, exact_i = brute_search(queries, codes, 15)
    assert distances.tolist() == exact_d.tolist()
    assert ids.tolist() == exact_i.tolist()  # ties broken by database order


def _radius_pool(query, codes, bits, pool):
    """Ids within the smallest prefix radius that holds at least `pool` ids (whole shells)."""
    dist = brute_distances(query[None, :bits], codes[:, :bits])[0]
    for radius in range(bits + 1):
        inside = np.flatnonzero(dist <= radius)
        if len(inside) >= pool:
            return inside
    return np.arange(len(codes))


@pytest.mark.parametrize("pool", [1, 25, 120])
def test_funnel_bucket_lookup_grows_radius_then_reranks(pool):
    codes = _clustered(11, 400, 32, centres=4)
    queries = _codes(12, 10, 32)
    index = FunnelIndex(codes, stages=[8, 32], pools=[pool])
    distances, ids = index.search(queries, 5)
    for row, query in enumerate(queries):
        cands = _radius_pool(query, codes, 8, pool)
        d, order = brute_search(query[None], codes[cands], min(5, len(cands)))
        k = d.shape[1]
        assert distances[row, :k].tolist() == d[0].tolist()
        assert ids[row, :k].tolist() == cands[order[0]].tolist()
        assert (ids[row, k:] == -1).all() and (distances[row, k:] == MISSING_DISTANCE).all()


def test_funnel_three_stages_keep_nearest_at_each_stage():
    codes = _clustered(13, 500, 48)
    queries = _codes(14, 8, 48)
    index = FunnelIndex(codes, stages=[8, 16, 48], pools=[100, 20])
    distances, ids = index.search(queries, 5)
    for row, query in enumerate(queries):
        cands = _radius_pool(query, codes, 8, 100)
        _, keep = brute_search(query[None, :16], codes[cands, :16], 20)
        cands = np.sort(cands[keep[0]])
        d, order = brute_search(query[None], codes[cands], 5)
        assert distances[row].tolist() == d[0].tolist()
        assert ids[row].tolist() == cands[order[0]].tolist()


def test_funnel_empty_index_and_save_load(tmp_path):
    empty = FunnelIndex(np.zeros((0, 32), np.float32), stages=[8, 32], pools=[10])
    distances, ids = empty.search(_codes(15, 3, 32), 4)
    assert (ids == -1).all() and (distances == MISSING_DISTANCE).all()
    codes, queries = _clustered(16, 200, 32), _codes(17, 4, 32)
    index = FunnelIndex(codes, stages=[8, 16, 32], pools=[40, 10], max_radius=3)
    path = tmp_path / "funnel.npz"
    index.save(path)
    loaded = FunnelIndex.load(path)
    assert (loaded.stages, loaded.pools, loaded.max_radius, loaded.ntotal) == ([8, 16, 32], [40, 10], 3, 200)
    for before, after in zip(index.search(queries, 6), loaded.search(queries, 6), strict=True):
        assert np.array_equal(before, after)


def test_funnel_errors():
    codes = _codes(18, 20, 32)
    for stages, pools, match in [
        ([16], [], "stages"),
        ([16, 8], [5], "stages"),
        ([25, 32], [5], "bucket"),
        ([8, 32], [5, 5], "pools"),
        ([8, 32], [0], "pools"),
        ([8, 40], [5], "codes: have 32"),
    ]:
        with pytest.raises(ValueError, match=match):
            FunnelIndex(codes, stages, pools)
    index = FunnelIndex(codes, [8, 32], [5])
    with pytest.raises(ValueError, match="queries: have 16"):
        index.search(_codes(19, 2, 16), 3)
    with pytest.raises(ValueError, match="only -1 and"):
        index.search(np.zeros((2, 32)), 3)
