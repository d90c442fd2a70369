import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import random

import numpy as np
import pytest

from data_pipeline import near_dedup
from data_pipeline.shingles import jaccard, shingle_set
from tests._dedup_beam import record, run_transform

VOCAB = [f"w{i}" for i in range(5000)]


def _doc(rng: random.Random, words: int = 200) -> list[str]:
    return [rng.choice(VOCAB) for _ in range(words)]


def _edit(rng: random.Random, words: list[str], edits: int) -> list[str]:
    out = list(words)
    for pos in rng.sample(range(len(out)), edits):
        out[pos] = rng.choice(VOCAB)
    return out


def _union_find_components(edges, nodes):
    parent = {n: n for n in nodes}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    return {n: find(n) for n in nodes}


def test_minhash_agreement_estimates_jaccard():
    rng = random.Random(0)
    base = _doc(rng, 400)
    hasher = near_dedup.MinHasher(num_perm=256, seed=3)
    for edits in (5, 20, 60):
        a = shingle_set(" ".join(base), 5)
        b = shingle_set(" ".join(_edit(rng, base, edits)), 5)
        estimate = float(np.mean(hasher.signature(a) == hasher.signature(b)))
        assert abs(estimate - jaccard(a, b)) < 0.1, (edits, estimate, jaccard(a, b))


def test_connected_components_match_union_find():
    rng = random.Random(1)
    names = [f"n{rng.random():.12f}" for _ in range(120)]
    # A long path in random label order (the hard case for label propagation) plus random edges.
    edges = [(names[i], names[i + 1]) for i in range(40)]
    edges += [tuple(rng.sample(names[40:], 2)) for _ in range(50)]
    edges = [(min(e), max(e)) for e in edges]
    nodes = sorted({n for e in edges for n in e})
    expected = _union_find_components(edges, nodes)
    (parents,) = run_transform(edges, lambda: near_dedup.ConnectedComponents(rounds=6))
    got = dict(parents)
    assert set(got) == {n for n in nodes if expected[n] != n}
    assert all(got[n] == expected[n] for n in got)


def _near_dup_corpus(seed=2):
    rng = random.Random(seed)
    records, clusters = [], []
    for c in range(6):
        base = _doc(rng, 300)
        ids = [f"c{c}-{k}" for k in range(3)]
        records.append(record(ids[0], " ".join(base)))
        records += [record(i, " ".join(_edit(rng, base, 3))) for i in ids[1:]]
        clusters.append(ids)
    singles = [record(f"single{i}", " ".join(_doc(rng, 300))) for i in range(10)]
    records += singles + [record("empty", "")]
    return records, clusters, [r["id"] for r in singles]


@pytest.mark.parametrize("verify", [True, False])
def test_keeps_one_representative_per_cluster(verify):
    records, clusters, singles = _near_dup_corpus()
    config = near_dedup.default_config()
    config.verify = verify
    kept, rejected = run_transform(list(reversed(records)), lambda: near_dedup.NearDedup(config))
    kept_ids = {r["id"] for r in kept}
    assert kept_ids == {min(ids) for ids in clusters} | set(singles) | {"empty"}
    assert sorted(r["id"] for r in rejected) == sorted(i for ids in clusters for i in ids[1:])
    assert {r["reason"] for r in rejected} == {"near_duplicate"}


def test_verification_rejects_lsh_false_positives():
    rng = random.Random(3)
    base = _doc(rng, 300)
    # Jaccard about 0.55: LSH with 1 row per band links them, the exact check does not.
    records = [record("a", " ".join(base)), record("b", " ".join(_edit(rng, base, 17)))]
    config = near_dedup.default_config()
    config.update({"num_perm": 20, "bands": 20, "verify": False})
    _, rejected = run_transform(records, lambda: near_dedup.NearDedup(config))
    assert [r["id"] for r in rejected] == ["b"]
    config.update({"verify": True, "jaccard_threshold": 0.8})
    _, rejected = run_transform(records, lambda: near_dedup.NearDedup(config))
    assert rejected == []


def test_cluster_size_cap_dissolves_big_clusters():
    records, clusters, singles = _near_dup_corpus()
    config = near_dedup.default_config()
    config.max_cluster_size = 2
    kept, rejected = run_transform(records, lambda: near_dedup.NearDedup(config))
    assert rejected == [] and len(kept) == len(records)


def test_disabled_keeps_everything():
    records, _, _ = _near_dup_corpus()
    config = near_dedup.default_config()
    config.enabled = False
    kept, rejected = run_transform(records, lambda: near_dedup.NearDedup(config))
    assert len(kept) == len(records) and rejected == []


@pytest.mark.parametrize(
    "field, value", [("bands", 13), ("num_perm", 0), ("jaccard_threshold", 1.5), ("max_cluster_size", -1)]
)
def test_bad_config_names_the_field(field, value):
    config = near_dedup.default_config()
    config[field] = value
    with pytest.raises(ValueError, match=f"config.near_dedup.{field}"):
        near_dedup.NearDedup(config)


def test_multiprocess_direct_runner():
    records, clusters, singles = _near_dup_corpus(seed=5)
    kept, rejected = run_transform(records, lambda: near_dedup.NearDedup(near_dedup.default_config()), multiprocess=True)
    assert {r["id"] for r in kept} == {min(ids) for ids in clusters} | set(singles) | {"empty"}
    assert len(rejected) == 12
