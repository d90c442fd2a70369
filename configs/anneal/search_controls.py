"""The mixture search's controls alone, as an anneal study: can the search see a known effect?

  python -m studies.anneal --config=configs/anneal/search_controls.py:DIR
  (or: python bench/mixture_search_study.py --work_dir DIR --controls_only)

configs/anneal/search_study.py's setup and seeds with only its reference arm (`general`),
its null control and its positive control, reported under DIR/controls: the positive
control's effect against its interval, at the search's size, before the search is sized.
"""

from __future__ import annotations

from configs.anneal import search_study


def get_config(arg: str = ""):
    c = search_study.get_config(arg)
    c.output_dir = c.output_dir.removesuffix("/search") + "/controls"
    c.arms = [arm for arm in c.arms if arm is c.arms[0] or arm.get("control")]
    return c
