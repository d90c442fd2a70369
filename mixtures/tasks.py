"""SeqIO Tasks over the prepared TFDS datasets: one per domain and one per high-quality subset.

`PREP_DIR/<domain>` is a TFDS dataset directory (docs/DESIGN.md); each Task reads it through
`PreparedSource`, a SeqIO DataSource over data_pipeline.prepared (the project's one reader of
prepared data: its own features, never the code a folder's features.json names).
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
from collections.abc import Mapping, Sequence

import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from common import fs
from common.checks import ConfigError
from common.domains import DOMAINS, HQ_SUFFIX
from data_pipeline import prepared
from tokenizer.special_ids import BOS_ID, BOS_POLICIES, bos_prefix
from tokenizer.vocab import load_vocabulary

INDEX_KEY = "source_index"  # passed through when the stream enumerates the source for exact resume


class PreparedSource(seqio.DataSource):
    """A prepared dataset directory as a SeqIO source, opened with data_pipeline.prepared.

    Reads as seqio.TfdsDataSource(read_only=True) does (same TFDS builder class, same read
    config), so the Tasks' examples and their order are unchanged.
    """

    def __init__(self, dataset_dir: fs.PathLike):
        self.dataset_dir = str(dataset_dir)
        super().__init__(splits=())

    @functools.cached_property
    def builder(self):
        return prepared.open_prepared(self.dataset_dir)

    @property
    def splits(self):
        return self.builder.info.splits

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return False

    def get_dataset(
        self,
        split: str | None = None,
        shuffle: bool = True,
        seed: int | None = None,
        shard_info: seqio.ShardInfo | None = None,
        *,
        sequence_length: Mapping[str, int] | None = None,  # unused, as in TfdsDataSource
        use_cached: bool = False,
        num_epochs: int | None = 1,
    ) -> tf.data.Dataset:
        read_config = tfds.ReadConfig(shuffle_seed=seed, skip_prefetch=True)
        if shard_info:
            read_config.input_context = tf.distribute.InputContext(
                num_input_pipelines=shard_info.num_shards, input_pipeline_id=shard_info.index
            )
        return self.builder.as_dataset(split=split or "train", shuffle_files=shuffle, read_config=read_config)

    def num_input_examples(self, split: str) -> int:
        return prepared.count(self.dataset_dir, split, builder=self.builder)

    def list_shards(self, split: str) -> Sequence[str]:
        return [info.filename for info in self.builder.info.splits[split].file_instructions]


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
    source = PreparedSource(dataset_dir)
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


def register_tasks(
    prep_dir: fs.PathLike,
    vocab_path: fs.PathLike,
    bos: str = "document",
    extra: Mapping[str, str] | None = None,
) -> list[str]:
    """Registers `<domain>` and `<domain>_hq` for every domain present under `prep_dir`, and
    every `extra` Task (NAME -> a prepared dataset directory, all of its documents).

    Re-registering replaces earlier Tasks of the same name, so a process may point the
    registry at another prepared directory (tests do). A `prep_dir` without any domain, or an
    extra Task that clashes or is no dataset, raises ConfigError naming `prep_dir` or
    `extra_tasks` (mixtures.pack prefixes its config path).
    """
    vocabulary = load_vocabulary(vocab_path)
    domains = prepared.domains(prep_dir)
    if not domains:
        raise ConfigError(f"prep_dir: no TFDS dataset for any of {DOMAINS} under {prep_dir}")
    tasks = {}
    for domain in domains:
        tasks[domain] = (prepared.domain_dir(prep_dir, domain), False)
        tasks[domain + HQ_SUFFIX] = (prepared.domain_dir(prep_dir, domain), True)
    for name, dataset_dir in (extra or {}).items():
        if name in tasks:
            raise ConfigError(f"extra_tasks: {name!r} is the name of a task of {prep_dir}")
        if not prepared.is_dataset_dir(dataset_dir):
            raise ConfigError(f"extra_tasks: {name!r}: no TFDS dataset (dataset_info.json) in {dataset_dir}")
        tasks[name] = (dataset_dir, False)
    for name, (dataset_dir, high_quality) in tasks.items():
        seqio.TaskRegistry.remove(name)
        seqio.TaskRegistry.add_provider(name, make_task(name, dataset_dir, vocabulary, bos, high_quality))
    return list(tasks)
