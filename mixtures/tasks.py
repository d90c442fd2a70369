"""SeqIO Tasks over the prepared TFDS datasets: one per domain and one per high-quality subset.

`PREP_DIR/<domain>` is a TFDS dataset directory (docs/DESIGN.md), so each Task reads it with
`seqio.TfdsDataSource(tfds_data_dir=...)`, which opens it with `tfds.builder_from_directory`.
Tokens: the project's vocabulary (`tokenizer.vocab.load_vocabulary`), EOS appended, BOS
prepended per document when the policy says so, and no truncation: the packer splits long
documents across rows instead of dropping their tail.

The high-quality Task (`web_hq`, ...) is the same source filtered on the `high_quality`
feature, so the annealing stage needs no second copy of the data. Extra Tasks (`extra`:
NAME -> a prepared dataset directory, e.g. another prepare run's `PREP2/math`) bring in a
dataset that is not part of the main preparation: the candidate whose worth a short anneal
measures (studies.anneal).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import seqio
import tensorflow as tf

from common import fs
from common.domains import DOMAINS, HQ_SUFFIX
from tokenizer.vocab import BOS_ID, BOS_POLICIES, bos_prefix, load_vocabulary

INDEX_KEY = "source_index"  # passed through when the stream enumerates the source for exact resume


def domain_dir(prep_dir: fs.PathLike, domain: str) -> str:
    """The TFDS dataset directory of a domain (docs/DESIGN.md); gs:// kept intact."""
    return fs.join(prep_dir, domain)


def _text_to_targets(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Keeps only what the packer needs: the text as `targets` and the source index if present."""

    def fn(ex):
        out = {"targets": ex["text"]}
        if INDEX_KEY in ex:
            out[INDEX_KEY] = ex[INDEX_KEY]
        return out

    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def _keep_high_quality(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset.filter(lambda ex: ex["high_quality"])


def _prepend_bos(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Gemma starts every document with <bos>; SeqIO only knows how to append EOS."""

    def fn(ex):
        return {**ex, "targets": tf.concat([tf.constant([BOS_ID], ex["targets"].dtype), ex["targets"]], 0)}

    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def make_task(
    name: str,
    dataset_dir: fs.PathLike,
    vocabulary: seqio.Vocabulary,
    bos: str = "document",
    high_quality: bool = False,
) -> seqio.Task:
    """Builds (does not register) the Task `name` over the TFDS dataset in `dataset_dir`;
    `high_quality` keeps only the documents data_pipeline.prepare marked so."""
    if bos not in BOS_POLICIES:
        raise ValueError(f"bos: must be one of {BOS_POLICIES}, got {bos!r}")
    source = seqio.TfdsDataSource(tfds_data_dir=str(dataset_dir), read_only=True)
    preprocessors = [_keep_high_quality] if high_quality else []
    preprocessors += [
        _text_to_targets,
        functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False),
        seqio.preprocessors.append_eos,
    ]
    if bos_prefix(bos):
        preprocessors.append(_prepend_bos)
    return seqio.Task(
        name,
        source=source,
        preprocessors=preprocessors,
        output_features={"targets": seqio.Feature(vocabulary, add_eos=True, dtype=tf.int32)},
        shuffle_buffer_size=None,  # order is the stream's business: it must be a pure function of the seed
    )


def is_dataset_dir(path: fs.PathLike) -> bool:
    return fs.isfile(fs.join(path, "dataset_info.json"))


def register_tasks(
    prep_dir: fs.PathLike,
    vocab_path: fs.PathLike,
    bos: str = "document",
    extra: Mapping[str, str] | None = None,
) -> list[str]:
    """Registers `<domain>` and `<domain>_hq` for every domain present under `prep_dir`, and
    every `extra` Task (NAME -> a prepared dataset directory, all of its documents).

    Re-registering replaces earlier Tasks of the same name, so a process may point the
    registry at another prepared directory (tests do).
    """
    vocabulary = load_vocabulary(vocab_path)
    domains = [d for d in DOMAINS if is_dataset_dir(domain_dir(prep_dir, d))]
    if not domains:
        raise FileNotFoundError(f"prep_dir: no TFDS dataset for any of {DOMAINS} under {prep_dir}")
    tasks = {}
    for domain in domains:
        tasks[domain] = (domain_dir(prep_dir, domain), False)
        tasks[domain + HQ_SUFFIX] = (domain_dir(prep_dir, domain), True)
    for name, dataset_dir in (extra or {}).items():
        if name in tasks:
            raise ValueError(f"extra task {name!r}: the name of a task of {prep_dir}")
        if not is_dataset_dir(dataset_dir):
            raise FileNotFoundError(
                f"extra task {name!r}: no TFDS dataset (dataset_info.json) in {dataset_dir}"
            )
        tasks[name] = (dataset_dir, False)
    for name, (dataset_dir, high_quality) in tasks.items():
        seqio.TaskRegistry.remove(name)
        seqio.TaskRegistry.add_provider(name, make_task(name, dataset_dir, vocabulary, bos, high_quality))
    return list(tasks)
