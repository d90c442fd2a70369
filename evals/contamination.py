"""Which eval items a run's training data holds: the decontamination stage's own index
(`data_pipeline.decontamination.decontaminate`, default config) over the items' text,
looked up in every training document of PREP_DIR's train split.

data_pipeline.prepare drops (or cuts) what this index finds, so a run prepared against
the same eval sets should hold none; this checks it rather than assuming it, for eval sets
the preparation was not told about, and for runs trained on data prepared elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

from data_pipeline import prepared
from data_pipeline.decontamination import matching
from data_pipeline.decontamination.eval_sets import EvalItem


def found_in_training(items: Sequence[EvalItem], prep_dir: str) -> set[int]:
    """Indices of `items` that share a decontamination window with PREP_DIR's train split."""
    index = matching.build_index(list(items), matching.default_config())
    found: set[int] = set()
    if index.keys:
        for domain in prepared.domains(prep_dir):
            for text in prepared.texts(prepared.domain_dir(prep_dir, domain), "train"):
                found.update(i for _, _, i, _ in index.find(text))
    return found
