import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import random

import numpy as np
import pytest

from data_pipeline.dedup import near
from data_pipeline.dedup.shingles import jaccard, shingle_set
from tests.support.beam import record, run_transform

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
    hasher = near.MinHasher(num_perm=256, seed=3)
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
    (parents,) = run_transform(edges, lambda: near.ConnectedComponents(rounds=6))
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
    config = near.default_config()
    config.verify = verify
    kept, rejected = run_transform(list(reversed(records)), lambda: near.NearDedup(config))
    kept_ids = {r["id"] for r in kept}
    assert kept_ids == {min(ids) for ids in clusters} | set(singles) | {"empty"}
    assert sorted(r["id"] for r in rejected) == sorted(i for ids in clusters for i in ids[1:])
    assert {r["reason"] for r in rejected} == {"near_duplicate"}


def test_verification_rejects_lsh_false_positives():
    rng = random.Random(3)
    base = _doc(rng, 300)
    # Jaccard about 0.55: LSH with 1 row per band links them, the exact check does not.
    records = [record("a", " ".join(base)), record("b", " ".join(_edit(rng, base, 17)))]
    config = near.default_config()
    config.update({"num_perm": 20, "bands": 20, "verify": False})
    _, rejected = run_transform(records, lambda: near.NearDedup(config))
    assert [r["id"] for r in rejected] == ["b"]
    config.update({"verify": True, "jaccard_threshold": 0.8})
    _, rejected = run_transform(records, lambda: near.NearDedup(config))
    assert rejected == []


def test_cluster_size_cap_dissolves_big_clusters():
    records, clusters, singles = _near_dup_corpus()
    config = near.default_config()
    config.max_cluster_size = 2
    kept, rejected = run_transform(records, lambda: near.NearDedup(config))
    assert rejected == [] and len(kept) == len(records)


def test_components_that_do_not_converge_fail_loudly():
    rng = random.Random(4)
    names = [f"n{rng.random():.12f}" for _ in range(64)]
    edges = [
        (min(names[i], names[i + 1]), max(names[i], names[i + 1])) for i in range(63)
    ]  # a long shuffled path
    with pytest.raises(Exception, match="not converged after 1 rounds"):
        run_transform(edges, lambda: near.ConnectedComponents(rounds=1))


def test_bucket_edges_survive_a_false_positive_at_the_minimum():
    """Star edges to the minimum only: one refuted edge there unlinked every true duplicate."""
    rng = random.Random(6)
    base = _doc(rng, 400)
    a = " ".join(base)
    b = " ".join(_edit(rng, base, 1))  # Jaccard ~0.98 with a
    m = " ".join(_edit(rng, base, 6))  # Jaccard ~0.88: a candidate that a 0.95 threshold refutes
    sets = [shingle_set(t, 5) for t in (a, b, m)]
    assert jaccard(sets[0], sets[1]) > 0.95 > max(jaccard(sets[0], sets[2]), jaccard(sets[1], sets[2]))
    # One band of one row: find a seed under which all three share the bucket.
    seed = next(s for s in range(500) if len({int(near.MinHasher(1, s).signature(x)[0]) for x in sets}) == 1)
    records = [record("0_fp", m), record("1_a", a), record("2_b", b)]
    config = near.default_config()
    config.update({"num_perm": 1, "bands": 1, "seed": seed, "jaccard_threshold": 0.95})
    kept, rejected = run_transform(records, lambda: near.NearDedup(config))
    assert [r["id"] for r in rejected] == ["2_b"]
    assert sorted(r["id"] for r in kept) == ["0_fp", "1_a"]


def test_hot_bucket_links_every_member_to_the_anchors():
    members = [f"n{i:05d}" for i in range(5000)]
    random.Random(0).shuffle(members)
    edges = list(near.bucket_edges((b"k", members), all_pairs=8, anchors=3))
    heads = ["n00000", "n00001", "n00002"]
    assert len(edges) == 3 + 3 * (5000 - 3)
    assert {b for a, b in edges if a == "n00000"} == set(members) - {"n00000"}
    assert all(a in heads and a < b for a, b in edges)
    small = list(near.bucket_edges((b"k", ["c", "a", "b"]), all_pairs=8, anchors=3))
    assert sorted(small) == [("a", "b"), ("a", "c"), ("b", "c")]


def test_documents_sharing_an_id_stay_apart():
    """Two different documents with the same (id, source) are two graph nodes, not one."""
    rng = random.Random(7)
    base = _doc(rng, 300)
    records = [
        record("x", " ".join(base)),
        record("x", " ".join(_doc(rng, 300))),
        record("a", " ".join(_edit(rng, base, 2))),
    ]
    kept, rejected = run_transform(records, lambda: near.NearDedup(near.default_config()))
    assert [r["text"] for r in rejected] == [records[0]["text"]]
    assert sorted(r["text"] for r in kept) == sorted([records[1]["text"], records[2]["text"]])


@pytest.mark.parametrize(
    "field, value", [("bands", 13), ("num_perm", 0), ("jaccard_threshold", 1.5), ("max_cluster_size", -1)]
)
def test_bad_config_names_the_field(field, value):
    config = near.default_config()
    config[field] = value
    with pytest.raises(ValueError, match=f"config.near_dedup.{field}"):
        near.NearDedup(config)


def test_multiprocess_direct_runner():
    records, clusters, singles = _near_dup_corpus(seed=5)
    kept, rejected = run_transform(records, lambda: near.NearDedup(near.default_config()), multiprocess=True)
    assert {r["id"] for r in kept} == {min(ids) for ids in clusters} | set(singles) | {"empty"}
    assert len(rejected) == 12
