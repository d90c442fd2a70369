"""Loglikelihood requests, tokenized exactly as lm-evaluation-harness tokenizes them.

lm-eval (HFLM._encode_pair) moves the context's trailing whitespace into the
continuation, encodes context + continuation together and the context alone, and takes the
whole encoding's tokens past the context's length as the continuation: a word boundary is
then tokenized as in running text, not as two separately encoded pieces. The BOS token
opens both encodings when the run trained with one (the mixture's `bos` policy); an empty
context becomes the BOS token alone (lm-eval's prefix token), the continuation encoded alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from evals.engine import Request
from evals.tasks import Doc, Task, fewshot_examples
from tokenizer.special_ids import BOS_ID

Encode = Callable[[str], Sequence[int]]


def move_whitespace(context: str, continuation: str) -> tuple[str, str]:
    """The context's trailing whitespace goes to the front of the continuation."""
    stripped = context.rstrip()
    return stripped, context[len(stripped) :] + continuation


def encode_pair(encode: Encode, context: str, continuation: str, bos: Sequence[int]) -> Request:
    """The Request of one (context, continuation) pair; `bos` is `bos_prefix(policy)`."""
    return encode_choices(encode, context, [continuation], bos)[0]


def encode_choices(
    encode: Encode, context: str, continuations: Sequence[str], bos: Sequence[int]
) -> list[Request]:
    """`encode_pair` of each continuation after one context, the context encoded once."""
    if not context:  # lm-eval's loglikelihood: the prefix token (BOS) is the context
        return [Request((BOS_ID,), tuple(encode(c))) for c in continuations]
    stripped, _ = move_whitespace(context, "")
    context_tokens = tuple(bos) + tuple(encode(stripped))
    requests = []
    for continuation in continuations:
        stripped, moved = move_whitespace(context, continuation)
        whole = tuple(bos) + tuple(encode(stripped + moved))
        requests.append(Request(context_tokens, whole[len(context_tokens) :]))
    return requests


@dataclasses.dataclass(frozen=True)
class DocRequests:
    """A doc, its full context (with shots) and one Request per continuation."""

    doc: Doc
    context: str
    continuations: tuple[str, ...]
    requests: tuple[Request, ...]


def doc_requests(
    task: Task,
    docs: Sequence[Doc],
    pool: Sequence[Doc],
    num_fewshot: int,
    seed: int,
    encode: Encode,
    bos: Sequence[int],
) -> list[DocRequests]:
    """Every doc's context (description, `num_fewshot` shots from `pool`, prompt) and requests."""
    out = []
    for doc in docs:
        context = task.context(doc, fewshot_examples(task, doc, pool, num_fewshot, seed))
        continuations = tuple(task.continuations(doc))
        requests = tuple(encode_choices(encode, context, continuations, bos))
        out.append(DocRequests(doc, context, continuations, requests))
    return out
