"""Studies: experiments that drive the trainer (`python -m pretrain.train`) through generated
configs and compare the runs (anneal arms, their evaluation and report; the mixture search).
Depends on `pretrain/`; nothing in `pretrain/` imports from here."""

from common import quiet  # noqa: F401  (first: silences library start-up noise)
