import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gzip
import json
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_pipeline.decontamination import decontaminate, eval_sets, matching
from data_pipeline.decontamination import report as decontamination_report
from data_pipeline.decontamination.eval_sets import EvalItem
from tests.support.beam import record, run_transform

QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
SHORT = "Which planet has the largest number of known moons today?"  # 10 words -> 8-grams
FILLER = " ".join(f"filler{i}" for i in range(120))


def _config(**overrides):
    config = matching.default_config()
    config.builtin_eval_sets = ()
    config.update(overrides)
    return config


def _items():
    return [
        EvalItem("gsm8k", "q1", QUESTION),
        EvalItem("quiz", "s1", SHORT),
        EvalItem("quiz", "tiny", "Why so?"),
    ]


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    """The items of ``_items()`` as eval-set files: the stage reads them on the workers."""
    root = tmp_path_factory.mktemp("eval")
    out = {}
    for item in _items():
        path = root / f"{item.eval_set}.jsonl"
        with path.open("a") as f:
            f.write(json.dumps({"id": item.item_id, "question": item.text}) + "\n")
        out[item.eval_set] = str(path)
    return out


@pytest.fixture
def run(specs):
    def _run(records, **overrides):
        config = _config(**overrides)
        return run_transform(records, lambda: decontaminate.Decontaminate(config, specs))

    return _run


def test_drops_verbatim_and_reformatted_copies_and_reports_hits(run):
    records = [
        record("verbatim", f"{FILLER} {QUESTION} {FILLER}"),
        record("reformatted", FILLER + " " + QUESTION.upper().replace(" ", "\n  ").replace(",", " ;") + "!!"),
        record("short", f"Quiz: {SHORT.lower()}"),
        record("clean", FILLER + " Natalia sold clips to friends and then went home."),
    ]
    kept, rejected, hits = run(records)
    assert [r["id"] for r in kept] == ["clean"]
    assert sorted(r["id"] for r in rejected) == ["reformatted", "short", "verbatim"]
    assert {r["reason"] for r in rejected} == {"contaminated"}
    by_doc = {h["id"]: h for h in hits}
    assert len(hits) == 3
    assert by_doc["verbatim"]["eval_set"] == "gsm8k" and by_doc["verbatim"]["eval_item_id"] == "q1"
    assert len(by_doc["verbatim"]["match"]) == 50 and by_doc["verbatim"]["match"] in "".join(
        c for c in QUESTION.lower() if c.isalnum()
    )
    assert by_doc["short"]["eval_item_id"] == "s1" and len(by_doc["short"]["match"]) == 35


def test_cut_removes_the_span_with_its_window(run):
    before, after = "a" * 300, "b" * 300
    doc = f"{before} {QUESTION} {after}"
    records = [record("doc", doc)]
    kept, rejected, hits = run(records, action="cut", cut_window_chars=10, min_piece_chars=50)
    assert rejected == [] and len(hits) == 1
    text = kept[0]["text"]
    assert "Natalia" not in text and "clips" not in text
    # Windows are found at the winnowed positions, so a cut may start or end a few
    # characters inside the item; cut_window_chars covers that (200 by default).
    before_cut, after_cut = text.split("\n\n")
    assert set(before_cut) == {"a"} and 280 <= len(before_cut) <= 300
    assert set(after_cut) == {"b"} and 280 <= len(after_cut) <= 300


def test_cut_drops_documents_with_nothing_left(run):
    kept, rejected, _ = run([record("doc", QUESTION)], action="cut")
    assert kept == [] and [r["id"] for r in rejected] == ["doc"]


def test_items_shorter_than_min_chars_are_skipped(run):
    index = matching.CharWindowIndex(_items(), window=50, min_chars=35, w=8)
    assert index.skipped == 1
    assert matching.CharWindowIndex(_items(), window=50, min_chars=35, w=8, min_item_chars=5).skipped == 0
    kept, rejected, hits = run([record("d", FILLER + " why so?")])
    assert len(kept) == 1 and rejected == [] and hits == []


def test_bad_action_names_the_field(specs):
    with pytest.raises(ValueError, match="config.decontamination.action"):
        decontaminate.Decontaminate(_config(action="blur"), specs)
    with pytest.raises(
        ValueError, match=r"config.decontamination.answer_window_chars: must be >= window_chars=50"
    ):
        decontaminate.Decontaminate(_config(answer_window_chars=40), specs)
    with pytest.raises(ValueError, match=r"config.decontamination.control_min_recall: must be in \[0, 1\]"):
        decontaminate.Decontaminate(_config(control_min_recall=95), specs)


def test_multiprocess_direct_runner(specs):
    records = [record(f"c{i}", f"{FILLER} {i}") for i in range(10)] + [record("dirty", QUESTION)]
    config = _config()
    kept, rejected, hits = run_transform(
        records, lambda: decontaminate.Decontaminate(config, specs), multiprocess=True
    )
    assert len(kept) == 10 and [r["id"] for r in rejected] == ["dirty"] and len(hits) == 1


def test_load_eval_sets_reads_every_format(tmp_path):
    (tmp_path / "gsm.jsonl").write_text(json.dumps({"question": "Q one?", "answer": "A one."}) + "\n")
    with gzip.open(tmp_path / "math.jsonl.gz", "wt") as f:
        f.write(json.dumps({"problem": "P", "solution": "S", "unique_id": "u7"}) + "\n")
    (tmp_path / "mmlu.csv").write_text("question,choice0,choice1,answer\nWhat?,yes,no,1\n")
    arc = {"id": "arc1", "question": {"stem": "Stem?", "choices": [{"text": "c1", "label": "A"}]}}
    (tmp_path / "arc.jsonl").write_text(json.dumps(arc) + "\n")
    pq.write_table(
        pa.Table.from_pylist([{"text": "mbpp task", "code": "def f(): pass", "task_id": 3}]),
        tmp_path / "m.parquet",
    )
    specs = {
        "gsm8k": str(tmp_path / "gsm.jsonl"),
        "math": str(tmp_path / "math.jsonl.gz"),
        "mmlu": str(tmp_path / "*.csv"),
        "arc": str(tmp_path / "arc.jsonl"),
        "mbpp": str(tmp_path / "m.parquet"),
    }
    items = {i.eval_set: i for i in eval_sets.load_eval_sets(specs, _config())}
    assert items["gsm8k"] == EvalItem("gsm8k", "gsm.jsonl:0", "Q one?\nA one.", "Q one?", "A one.")
    assert items["math"] == EvalItem("math", "u7", "P\nS", "P", "S")
    assert items["mmlu"] == EvalItem("mmlu", "mmlu.csv:0", "What?\nyes\nno\n1", "What?\nyes\nno", "1")
    assert items["arc"] == EvalItem("arc", "arc1", "Stem?\nc1", "Stem?\nc1")
    assert items["mbpp"] == EvalItem("mbpp", "3", "mbpp task\ndef f(): pass", "mbpp task", "def f(): pass")


def test_builtin_humaneval_needs_no_file():
    items = eval_sets.load_eval_sets({}, _config(builtin_eval_sets=("humaneval",)))
    assert len(items) == 164
    assert items[0].item_id == "HumanEval/0" and "def has_close_elements" in items[0].text


def test_parse_specs_rejects_missing_path():
    assert eval_sets.parse_specs(["a=gs://b/e.jsonl", "h=builtin"]) == {"a": "gs://b/e.jsonl", "h": "builtin"}
    assert eval_sets.parse_specs(["a=b.jsonl"]) == {"a": os.path.abspath("b.jsonl")}
    with pytest.raises(ValueError, match="NAME=PATH"):
        eval_sets.parse_specs(["gsm8k"])


def test_number_only_ngrams_are_not_indexed():
    counting = EvalItem(
        "math",
        "count",
        "John counts 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 and stops",
    )
    index = matching.CharWindowIndex([counting], window=50, min_chars=35, w=8)
    pages, _ = matching.normalized_chars(
        "page 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 next"
    )
    assert list(index.matches(pages)) == []
    leak, _ = matching.normalized_chars("JOHN counts: " + ", ".join(map(str, range(1, 26))) + " and stops.")
    assert {m[2] for m in index.matches(leak)} == {0}


def test_numbers_match_whatever_their_separators(run):
    """GSM8K-style: a number written 1,000 in the eval set and 1000 or 1 , 000 in the page."""
    question = (
        "A baker sells 1,250 loaves of bread each week for $3 each. "
        "How much money does the baker make in 4 weeks if he sells all of them?"
    )
    docs = [
        record("plain", f"{FILLER}\n" + question.replace("1,250", "1250")),
        record("spaced", f"{FILLER}\n" + question.replace("1,250", "1 , 250").replace("$3", "$ 3")),
        record("verbatim", f"{FILLER}\n" + question),
    ]
    config = _config()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gsm.jsonl")
        with open(path, "w") as f:
            f.write(json.dumps({"question": question, "answer": "15000"}) + "\n")
        kept, rejected, hits = run_transform(docs, lambda: decontaminate.Decontaminate(config, {"gsm": path}))
    assert sorted(r["id"] for r in rejected) == ["plain", "spaced", "verbatim"]


def test_eval_rows_without_a_text_field_name_the_file_and_fields(tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text(json.dumps({"query": "What is 2 + 2?", "label": "4"}) + "\n")
    with pytest.raises(ValueError, match=r"odd.jsonl has no text field; fields seen: \['label', 'query'\]"):
        eval_sets.load_eval_sets({"odd": str(path)}, _config())


def test_eval_items_are_not_pickled_into_the_job(tmp_path):
    """Only the eval sets' paths travel in the job graph; workers load the items in setup."""
    from apache_beam.internal import pickler

    path = tmp_path / "big.jsonl"
    path.write_text(
        "".join(json.dumps({"question": f"{FILLER} question number {i}"}) + "\n" for i in range(2000))
    )
    fn = decontaminate._Decontaminate(_config(), {"big": str(path)})
    assert len(pickler.dumps(fn)) < 20_000  # the items alone are > 2 MB
    fn.setup()
    assert len(fn._index.items) == 2000


def test_punctuation_dropped_or_spaced_out_inside_words_still_matches(run, tmp_path):
    """Word n-grams missed these: dropping `(` `,` inside `f(a,b)` merges words, spacing them splits."""
    code = "def add_numbers(first, second):\n    return first + second  # the sum of two integers"
    path = tmp_path / "mbpp.jsonl"
    path.write_text(json.dumps({"text": code}) + "\n")  # a code prompt: matched in 50-character windows
    docs = [
        record(
            "dropped", FILLER + "\ndef addnumbersfirst second\n return first  second  the sum of two integers"
        ),
        record(
            "spaced",
            FILLER
            + "\nDEF ADD _ NUMBERS ( FIRST , SECOND ) : RETURN FIRST + SECOND # THE SUM OF TWO INTEGERS",
        ),
        record("clean", FILLER + "\nthe sum of two integers is an integer"),
    ]
    config = _config()
    kept, rejected, _ = run_transform(docs, lambda: decontaminate.Decontaminate(config, {"mbpp": str(path)}))
    assert sorted(r["id"] for r in rejected) == ["dropped", "spaced"] and [r["id"] for r in kept] == ["clean"]


ARITHMETIC = EvalItem(
    "bbh",
    "multistep_arithmetic_two.json:0",
    "((-1 + 2 + 9 * 5) - (-2 + -4 + -4 * -7)) =\n24",
    "((-1 + 2 + 9 * 5) - (-2 + -4 + -4 * -7)) =",
)


def _found(index, text):
    return {i for _, _, i, _ in index.find(text)}


def test_arithmetic_items_without_letters_match_in_their_expression_form():
    """BBH's multistep arithmetic has no letters: its letters+digits form is a digit run like
    page numbers, so it was never indexed. With the operators kept it matches whole,
    whatever happens to brackets, spacing, the trailing '=' or Unicode minus signs."""
    index = matching.CharWindowIndex([ARITHMETIC], window=50, min_chars=35, w=8, min_item_chars=20)
    assert index.skipped == 0
    for leak in (
        "Intro line.\n((-1 + 2 + 9 * 5) - (-2 + -4 + -4 * -7)) =\n24\nMore.",
        'Q: ( ( -1 + 2 + 9 * 5 ) - ( -2 + -4 + -4 * -7 ) ) =\nA: "24"',
        "{'input': '(-1 +  2 + 9*5) - (-2 + -4 + -4*-7)', 'target': '24'}",
        "\u22121 + 2 + 9 \u00d7 5 \u2212 (\u22122 + \u22124 + \u22124 \u00d7 \u22127) = 24",
    ):
        assert _found(index, leak) == {0}, leak
    for clean in (
        "Pages 1 2 9 5 2 4 4 7 24 of the report.",  # the same digits, no expression
        "((-1 + 2 + 9 * 5) - (-2 + -4 + -4 * -8)) = 25",  # another expression
        "((-1 + 2 + 9 * 5) - (-2 + -4",  # only its start
    ):
        assert _found(index, clean) == set(), clean


def test_expression_form_needs_enough_characters_and_operators():
    items = [
        EvalItem("mmlu", "short", "8 + 8 / 2 + 2 =\n14"),  # 11 characters in expression form
        EvalItem("bbh", "words", "( ( not ( True ) ) ) is\nFalse"),  # no operators: a phrase
        EvalItem("bbh", "dates", "2019 2020 2021 2022 2023 2024"),  # digits only, no operators
    ]
    index = matching.CharWindowIndex(items, window=50, min_chars=35, w=8, min_item_chars=20)
    assert index.skipped == 3 and len(index.expression_keys) == 0
    assert _found(index, "It is not true; not true is false. 8 + 8 / 2 + 2 = 14") == set()


def test_pipeline_drops_arithmetic_leaks(tmp_path):
    path = tmp_path / "bbh.json"
    path.write_text(json.dumps({"examples": [{"input": ARITHMETIC.question, "target": "24"}]}))
    config = _config()
    kept, rejected, hits = run_transform(
        [
            record("leak", f"{FILLER}\n{ARITHMETIC.text}\n{FILLER}"),
            record("clean", f"{FILLER}\n1 2 9 5 2 4 4 7 24\n{FILLER}"),
        ],
        lambda: decontaminate.Decontaminate(config, {"bbh": str(path)}),
    )
    assert [r["id"] for r in kept] == ["clean"] and [r["id"] for r in rejected] == ["leak"]
    assert {h["match"] for h in hits} == {"-1+2+9*5--2+-4+-4*-7"}


SOLUTION = (
    "Substituting the first equation into the second equation, we get 3x + 2 = 11, so x = 3. "
    "Checking, the pair of boxes holds 3 + 8 = 11 marbles, as the problem requires."
)


def test_answers_match_only_in_long_stretches_or_beside_their_question(tmp_path):
    """A worked solution's generic sentence (50 letters+digits, the GSM8K-train false positives)
    no longer flags a document; a long stretch of the answer, or the question, still does."""
    path = tmp_path / "gsm.jsonl"
    path.write_text(json.dumps({"question": QUESTION, "answer": SOLUTION}) + "\n")
    generic = "Substituting the first equation into the second equation, we get"
    long_answer = SOLUTION[:-20]  # well over answer_window_chars letters+digits, not all of it
    docs = [
        record("generic", f"{FILLER}\nOther problem. {generic} 2y = 8, so y = 4.\n{FILLER}"),
        record("answer", f"{FILLER}\n{long_answer}\n{FILLER}"),
        record("whole", f"{FILLER}\n{QUESTION}\n{SOLUTION}\n{FILLER}"),
        record("question", f"{FILLER}\n{QUESTION.upper()}\n{FILLER}"),
    ]
    config = _config()
    kept, rejected, hits = run_transform(
        docs, lambda: decontaminate.Decontaminate(config, {"gsm": str(path)})
    )
    assert [r["id"] for r in kept] == ["generic"]
    assert {len(h["match"]) for h in hits if h["id"] == "answer"} == {config.answer_window_chars}
    # Before the split (answers matched in 50-character windows) the generic sentence matched.
    config.answer_window_chars = config.window_chars
    kept, _, _ = run_transform(docs, lambda: decontaminate.Decontaminate(config, {"gsm": str(path)}))
    assert kept == []


def test_short_question_matches_with_the_start_of_its_answer():
    """A question shorter than half a window is matched together with its answer's start (the
    whole item's first window), never by answer text alone."""
    item = EvalItem("math", "m1", "Compute 7 choose 4.\n" + SOLUTION, "Compute 7 choose 4.", SOLUTION)
    index = matching.CharWindowIndex([item], window=50, min_chars=35, w=8, answer_window=100)
    assert _found(index, "compute 7 CHOOSE 4: " + SOLUTION[:40]) == {0}
    assert _found(index, "Compute 8 choose 4. " + SOLUTION[:80]) == set()


def test_report_ranks_generic_stretches_first_and_samples_documents_in_order():
    def hit(doc, match, item="i1"):
        context = matching.highlight(f"before {match} after", 7, 7 + len(match))
        return {
            "id": doc,
            "source": "web",
            "eval_set": "gsm8k",
            "eval_item_id": item,
            "match": match,
            "context": context,
        }

    hits = [hit(f"d{i}", "generic") for i in range(6)] + [hit("d9", "rare", "i2"), hit("d0", "rare", "i2")]
    controls = {"gsm8k": {"recall": 1.0, "verbatim": "2/2", "perturbed": "2/2"}}
    text = decontamination_report.report(reversed(hits), controls, top=2, samples=2)
    assert "| gsm8k | 7 | 1.000 (2/2, 2/2) |" in text
    assert text.index("| 6 | `generic` |") < text.index("| 2 | `rare` |")
    assert "- `web` `d0` ~ item `i1`: before [[generic]] after\n- `web` `d0` ~ item `i2`" in text


# GSM8K train documents that share a question stretch with a GSM8K test item: template twins
# (bench/RESULTS.md lists them with the stretch), the only ones flagged against the suite.
GSM8K_TRAIN_TWINS = {20, 406, 1314, 5162, 7285}


@pytest.mark.shared_data
def test_gsm8k_train_worked_solutions_are_kept_and_pasted_items_caught(shared_data):
    """Against GSM8K test and MATH test: GSM8K train (question + worked answer) is flagged
    only for its template twins of test questions (<= 0.1%; with answers matched in
    50-character windows, as before, > 0.2%), and pasted items are all caught."""
    import random

    from data_pipeline.decontamination import controls

    eval_dir = shared_data / "eval"
    specs = {"gsm8k": str(eval_dir / "gsm8k/test.jsonl"), "math": str(eval_dir / "math/math_test.jsonl")}
    rows = [json.loads(line) for line in (eval_dir / "gsm8k/train.jsonl").open()]
    train = [f"{r['question']}\n{r['answer']}" for r in rows]

    def flagged(config):
        index = matching.load_index(config, specs)
        return index, {k for k, text in enumerate(train) if _found(index, text)}

    index, new = flagged(_config())
    assert new <= GSM8K_TRAIN_TWINS and len(new) / len(train) <= 0.001
    _, old = flagged(_config(answer_window_chars=50))
    assert len(old) / len(train) > 0.002
    rng = random.Random(0)
    for name in specs:
        pool = [i for i, item in enumerate(index.items) if item.eval_set == name]
        for i in rng.sample(pool, 25):
            for text in (index.items[i].text, controls.perturb(index.items[i].text, rng)):
                assert i in _found(index, f"{controls.CARRIER_BEFORE}\n{text}\n{controls.CARRIER_AFTER}"), (
                    text
                )
