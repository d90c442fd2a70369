"""Near-duplicate removal: MinHash LSH on word n-gram shingles, then connected components.

Why each step (Broder 1997; Leskovec et al., *Mining of Massive Datasets* ch. 3; Kiveris et
al. 2014, "Connected Components in MapReduce and Beyond"):

1. Every document gets a MinHash signature of its word 5-gram shingles; its ``bands`` slices
   of ``rows`` values are LSH buckets. Two documents with Jaccard ``s`` share a bucket with
   probability ``1 - (1 - s**rows)**bands``. The default 20 bands x 5 rows puts the 50% point
   near 0.55 and misses a pair at 0.85 with probability ~1e-5 (0.997 at 0.8). With 14 x 8
   (datatrove's default, ours before) a pair at 0.85 was missed once in 200: insertions and
   deletions shift every 5-gram they touch, so 1-2% edited words already bring a page down
   to 0.85, and the held-out benchmark lost such pairs. The extra candidates that the lower
   threshold brings are removed by the exact Jaccard check (step 3).
2. Candidate edges of a bucket: every pair when it has at most ``bucket_all_pairs`` members,
   else every member to each of the bucket's ``anchors`` smallest members (and the anchors
   to each other). Linking only to the bucket minimum (a star) let one LSH false positive at
   the minimum unlink every true duplicate in the bucket once verification refuted that
   edge. A bucket is read twice as a stream (the smallest members, then the edges), so a
   hot bucket of millions of members never has to fit in a worker's memory.
3. Optionally each candidate edge is checked with the exact Jaccard of the two shingle sets
   (the sets travel to the edge through two keyed joins; nothing is broadcast).
4. Connected components by alternating large-star / small-star rounds: each round is a
   GroupByKey per node, so no worker ever holds more than one node's neighbourhood.
   The rounds are unrolled up to ``cc_rounds``; a distributed check then proves the result
   is the fixpoint (every parent is a root, every edge's ends share the root) and fails the
   job loudly, naming the field to raise, when it is not. Every non-root node is a
   duplicate; the smallest ``(id, source)`` in each cluster is its representative.
5. A cluster larger than ``max_cluster_size`` is usually a chain of drifting templates, not
   copies of one document: it is dissolved (all kept) and counted.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import ml_collections
import numpy as np
from apache_beam.metrics import Metrics

from common import checks
from data_pipeline.dedup.shingles import jaccard, shingle_set
from data_pipeline.records import REJECTED, rejection

REASON = "near_duplicate"
NAMESPACE = "near_dedup"
_CHUNK = 4096  # shingles hashed at once, bounds memory on huge documents


def default_config() -> ml_collections.ConfigDict:
    """Fields of ``config.near_dedup``."""
    return ml_collections.ConfigDict(
        {
            "enabled": True,
            "ngram": 5,  # words per shingle
            "num_perm": 100,  # MinHash permutations = bands * rows
            "bands": 20,
            "seed": 1,
            "verify": True,  # exact Jaccard check of candidate pairs
            "jaccard_threshold": 0.8,  # used when verify is on
            "max_cluster_size": 0,  # 0 = no cap; larger clusters are kept whole and counted
            "cc_rounds": 8,  # cap on large-star + small-star rounds; not converged by then = the job fails
            "bucket_all_pairs": 8,  # buckets up to this size: every pair is a candidate edge
            "anchors": 3,  # larger buckets: each member to this many smallest members
        }
    )


def validate(config: ml_collections.ConfigDict, prefix: str = "near_dedup") -> None:
    """Fail at start with the field name on bad values."""
    for field in ("ngram", "num_perm", "bands", "cc_rounds", "bucket_all_pairs", "anchors"):
        checks.positive(int(config[field]), f"{prefix}.{field}")
    checks.require(
        config.num_perm % config.bands == 0,
        f"{prefix}.bands",
        f"must divide num_perm={config.num_perm}",
        config.bands,
    )
    checks.require(
        0.0 < config.jaccard_threshold <= 1.0,
        f"{prefix}.jaccard_threshold",
        "must be in (0, 1]",
        config.jaccard_threshold,
    )
    checks.non_negative(config.max_cluster_size, f"{prefix}.max_cluster_size")


def node_key(record: dict[str, Any]) -> str:
    """Graph node of a record; string order equals ``(id, source)`` order.

    A digest of the text ends the key, so two different documents that share an
    ``(id, source)`` (the data's mistake) stay two nodes instead of merging into one.
    """
    digest = hashlib.blake2b(record["text"].encode("utf-8"), digest_size=8).hexdigest()
    return f"{record['id']}\x00{record['source']}\x00{digest}"


class MinHasher:
    """Signature of a shingle set under ``num_perm`` multiply-shift hash functions."""

    def __init__(self, num_perm: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, 2**63, size=(num_perm, 1), dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 2**63, size=(num_perm, 1), dtype=np.uint64)

    def signature(self, shingles: np.ndarray) -> np.ndarray:
        sig = np.full(len(self.a), np.iinfo(np.uint64).max, dtype=np.uint64)
        for start in range(0, len(shingles), _CHUNK):
            chunk = shingles[None, start : start + _CHUNK]
            np.minimum(sig, ((chunk * self.a + self.b) >> np.uint64(32)).min(axis=1), out=sig)
        return sig


def band_keys(signature: np.ndarray, bands: int) -> list[bytes]:
    """One LSH bucket key per band: band index + digest of that band's rows."""
    rows = len(signature) // bands
    keys = []
    for band in range(bands):
        digest = hashlib.blake2b(signature[band * rows : (band + 1) * rows].tobytes(), digest_size=8).digest()
        keys.append(band.to_bytes(2, "big") + digest)
    return keys


class _Signatures(beam.DoFn):
    """record -> (bucket, node) per band; tagged (node, shingle bytes) for verification."""

    def __init__(self, config: ml_collections.ConfigDict) -> None:
        self._ngram = int(config.ngram)
        self._num_perm = int(config.num_perm)
        self._bands = int(config.bands)
        self._seed = int(config.seed)
        self._verify = bool(config.verify)
        self._hasher: MinHasher | None = None

    def setup(self) -> None:
        self._hasher = MinHasher(self._num_perm, self._seed)

    def process(self, record: dict[str, Any]) -> Iterator[Any]:
        shingles = shingle_set(record["text"], self._ngram)
        if len(shingles) == 0:
            return
        node = node_key(record)
        for key in band_keys(self._hasher.signature(shingles), self._bands):
            yield key, node
        if self._verify:
            yield beam.pvalue.TaggedOutput("shingles", (node, shingles.tobytes()))


def bucket_edges(
    element: tuple[bytes, Iterable[str]], all_pairs: int, anchors: int
) -> Iterator[tuple[str, str]]:
    """Candidate edges (smaller, larger) of one LSH bucket, reading its members as a stream.

    The members iterable is read twice (Beam's grouped values are re-iterable); only the
    ``max(all_pairs, anchors)`` smallest are ever held, however hot the bucket.
    """
    _, members = element
    keep = max(all_pairs, anchors)
    smallest = sorted(set(heapq.nsmallest(keep + 1, members)))
    if len(smallest) <= all_pairs:
        for i, a in enumerate(smallest):
            for b in smallest[i + 1 :]:
                yield a, b
        return
    heads = smallest[:anchors]
    for i, a in enumerate(heads):
        for b in heads[i + 1 :]:
            yield a, b
    for member in members:
        if member > heads[-1]:
            for head in heads:
                yield head, member


class _Count(beam.DoFn):
    """Pass elements through, counting them under ``near_dedup/<name>``."""

    def __init__(self, name: str) -> None:
        self._counter = Metrics.counter(NAMESPACE, name)

    def process(self, element: Any) -> Iterator[Any]:
        self._counter.inc()
        yield element


class _ShipShingles(beam.DoFn):
    """(u, {edges: [v...], shingles: [s_u]}) -> (v, (u, s_u)) for every candidate edge."""

    def process(self, element: tuple[str, dict[str, list]]) -> Iterator[tuple[str, tuple[str, bytes]]]:
        u, groups = element
        if not groups["shingles"]:
            return
        shingles_u = groups["shingles"][0]
        for v in groups["edges"]:
            yield v, (u, shingles_u)


class _VerifyJaccard(beam.DoFn):
    """(v, {pairs: [(u, s_u)...], shingles: [s_v]}) -> (u, v) when Jaccard >= threshold."""

    def __init__(self, threshold: float) -> None:
        self._threshold = threshold
        self._verified = Metrics.counter(NAMESPACE, "verified_pairs")
        self._refuted = Metrics.counter(NAMESPACE, "refuted_pairs")

    def process(self, element: tuple[str, dict[str, list]]) -> Iterator[tuple[str, str]]:
        v, groups = element
        if not groups["shingles"]:
            return
        shingles_v = np.frombuffer(groups["shingles"][0], dtype=np.uint64)
        for u, shingles_u in groups["pairs"]:
            if jaccard(np.frombuffer(shingles_u, dtype=np.uint64), shingles_v) >= self._threshold:
                self._verified.inc()
                yield u, v
            else:
                self._refuted.inc()


def _both_directions(edge: tuple[str, str]) -> Iterator[tuple[str, str]]:
    yield edge
    yield edge[1], edge[0]


def _large_star(element: tuple[str, Iterable[str]]) -> Iterator[tuple[str, str]]:
    """Connect every larger neighbour of u to the minimum of u's closed neighbourhood."""
    u, neighbours = element
    neighbours = set(neighbours)
    smallest = min(min(neighbours), u)
    for v in neighbours:
        if v > u:
            yield v, smallest


def _towards_larger(edge: tuple[str, str]) -> tuple[str, str]:
    """Key an undirected edge by its larger endpoint."""
    a, b = edge
    return (a, b) if a > b else (b, a)


def _small_star(element: tuple[str, Iterable[str]]) -> Iterator[tuple[str, str]]:
    """Connect u and its smaller neighbours to the smallest of them (edges child -> parent)."""
    u, smaller = element
    members = set(smaller) | {u}
    smallest = min(members)
    for v in members:
        if v != smallest:
            yield v, smallest


class NotConverged(RuntimeError):
    """Connected components did not reach the fixpoint within ``cc_rounds`` rounds."""


def _check_edge(element: tuple[str, dict[str, list]]) -> Iterator[tuple[str, tuple[str, str]]]:
    """(a, {edges: [b...], parent: [p]}) -> (b, (a, root of a)) for each edge."""
    a, groups = element
    root = groups["parent"][0] if groups["parent"] else a
    for b in groups["edges"]:
        yield b, (a, root)


class _FailUnlessFixpoint(beam.DoFn):
    """Raises when an edge's ends have different roots or a parent has a parent itself."""

    def __init__(self, rounds: int) -> None:
        self._rounds = rounds

    def process(self, element: tuple[str, dict[str, list]]) -> Iterator[None]:
        b, groups = element
        root_b = groups["parent"][0] if groups["parent"] else b
        for a, root_a in groups["ends"]:
            if root_a != root_b:
                raise NotConverged(
                    f"near_dedup: connected components not converged after {self._rounds} rounds "
                    f"({a!r} -> {root_a!r} but {b!r} -> {root_b!r}); raise config.near_dedup.cc_rounds"
                )
        if groups["parent"] and groups["children"] and b != root_b:
            raise NotConverged(
                f"near_dedup: connected components not converged after {self._rounds} rounds "
                f"({b!r} is both a child and a parent); raise config.near_dedup.cc_rounds"
            )
        return iter(())


class ConnectedComponents(beam.PTransform):
    """Undirected edges (a, b) -> (node, parent) with parent < node, for non-root nodes.

    Alternating large-star/small-star rounds keep the components and turn each one into a
    star around its minimum (Kiveris et al. 2014: O(log^2 n) rounds). Beam graphs cannot
    loop, so ``rounds`` rounds are unrolled (a converged graph passes through the rest
    unchanged) and a final distributed check fails the job unless the result is the
    fixpoint: every edge's two ends have the same root and no parent has a parent.
    """

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self._rounds = rounds

    def expand(self, edges: beam.PCollection) -> beam.PCollection:
        original = edges
        for i in range(self._rounds):
            edges = (
                edges
                | f"LargeStarBoth{i}" >> beam.FlatMap(_both_directions)
                | f"LargeStarGroup{i}" >> beam.GroupByKey()
                | f"LargeStar{i}" >> beam.FlatMap(_large_star)
                | f"SmallStarKey{i}" >> beam.Map(_towards_larger)
                | f"SmallStarGroup{i}" >> beam.GroupByKey()
                | f"SmallStar{i}" >> beam.FlatMap(_small_star)
            )
        parents = (
            edges
            | "GroupParents" >> beam.GroupByKey()
            | "SmallestParent" >> beam.MapTuple(lambda v, ps: (v, min(ps)))
        )
        ends = (
            {"edges": original, "parent": parents}
            | "JoinFirstEnd" >> beam.CoGroupByKey()
            | "RootOfFirstEnd" >> beam.FlatMap(_check_edge)
        )
        children = parents | "ByParent" >> beam.MapTuple(lambda v, p: (p, v))
        _ = (
            {"ends": ends, "parent": parents, "children": children}
            | "JoinSecondEnd" >> beam.CoGroupByKey()
            | "FailUnlessFixpoint" >> beam.ParDo(_FailUnlessFixpoint(self._rounds))
        )
        return parents


class _CapClusters(beam.DoFn):
    """(root, members) -> (member, root); counts clusters and dissolves oversized ones."""

    def __init__(self, max_cluster_size: int) -> None:
        self._max = max_cluster_size
        self._clusters = Metrics.counter(NAMESPACE, "clusters")
        self._oversized = Metrics.counter(NAMESPACE, "oversized_clusters")
        self._sizes = Metrics.distribution(NAMESPACE, "cluster_size")

    def process(self, element: tuple[str, Iterable[str]]) -> Iterator[tuple[str, str]]:
        root, members = element
        members = list(members)
        self._clusters.inc()
        self._sizes.update(len(members) + 1)
        if self._max and len(members) + 1 > self._max:
            self._oversized.inc()
            return
        for member in members:
            yield member, root


class _Split(beam.DoFn):
    """(node, {records, roots}) -> kept record, or tagged rejection when it has a root."""

    def __init__(self) -> None:
        self._dropped = Metrics.counter(NAMESPACE, REASON)

    def process(self, element: tuple[str, dict[str, list]]) -> Iterator[Any]:
        _, groups = element
        duplicate = bool(groups["roots"])
        for record in groups["records"]:
            if duplicate:
                self._dropped.inc()
                yield beam.pvalue.TaggedOutput(REJECTED, rejection(record, REASON))
            else:
                yield record


class NearDedup(beam.PTransform):
    """records -> (kept, rejected); rejected reason ``near_duplicate``."""

    def __init__(self, config: ml_collections.ConfigDict) -> None:
        super().__init__()
        validate(config)
        self._config = ml_collections.ConfigDict(config.to_dict())

    def expand(self, records: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        config = self._config
        signed = records | "MinHash" >> beam.ParDo(_Signatures(config)).with_outputs(
            "shingles", main="buckets"
        )
        edges = (
            signed.buckets
            | "GroupBuckets" >> beam.GroupByKey()
            | "BucketEdges" >> beam.FlatMap(bucket_edges, int(config.bucket_all_pairs), int(config.anchors))
            | "DistinctCandidates" >> beam.Distinct()
            | "CountCandidates" >> beam.ParDo(_Count("candidate_pairs"))
        )
        if config.verify:
            shipped = (
                {"edges": edges, "shingles": signed.shingles}
                | "JoinFirstShingles" >> beam.CoGroupByKey()
                | "ShipShingles" >> beam.ParDo(_ShipShingles())
            )
            edges = (
                {"pairs": shipped, "shingles": signed.shingles}
                | "JoinSecondShingles" >> beam.CoGroupByKey()
                | "VerifyJaccard" >> beam.ParDo(_VerifyJaccard(float(config.jaccard_threshold)))
            )
        roots = (
            edges
            | "Components" >> ConnectedComponents(int(config.cc_rounds))
            | "ByRoot" >> beam.MapTuple(lambda node, root: (root, node))
            | "GroupClusters" >> beam.GroupByKey()
            | "CapClusters" >> beam.ParDo(_CapClusters(int(config.max_cluster_size)))
        )
        split = (
            {"records": records | "KeyByNode" >> beam.Map(lambda r: (node_key(r), r)), "roots": roots}
            | "JoinRoots" >> beam.CoGroupByKey()
            | "Split" >> beam.ParDo(_Split()).with_outputs(REJECTED, main="kept")
        )
        return split.kept, split[REJECTED]
