"""The JSON depth check: its shortcuts decide exactly as the full scan over the body does."""

import re
from itertools import accumulate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onefunnel.ingest.limits import DeliveryRejected, check_json_depth

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def too_deep_by_full_scan(body: bytes, limit: int) -> bool:
    """The reference: blank every JSON string with one regex, then follow the brackets left."""
    if body.lstrip()[:1] not in (b"{", b"["):
        return False
    brackets = [b for b in _STRING.sub(b'""', body) if b in _STEP]
    return bool(brackets) and max(accumulate(_STEP[b] for b in brackets)) > limit


def too_deep(body: bytes, limit: int) -> bool:
    try:
        check_json_depth(body, limit=limit)
    except DeliveryRejected:
        return True
    return False


@pytest.mark.parametrize(
    ("body", "limit", "refused"),
    [
        (b"[[[]]]", 3, False),
        (b"[[[[]]]]", 3, True),
        (b'[{"a": "[[[[[["}]', 3, False),  # brackets inside a string nest nothing
        (b'[{"a": "\\"[[[[[["}]', 3, False),  # nor after an escaped quote
        (b'[{"a": "\\\\"}, [[[[]]]]]', 3, True),  # an escaped backslash ends no string early
        (b'["unclosed [[[[', 3, True),  # as the full scan reads it: not a string
        (b"[" + b"{}," * 100 + b"{}]", 2, False),  # many brackets, shallow
    ],
)
def test_depth_counts_brackets_outside_strings_only(body: bytes, limit: int, refused: bool) -> None:
    assert too_deep(body, limit) is refused
    assert too_deep_by_full_scan(body, limit) is refused


@given(
    body=st.binary(max_size=40).map(lambda b: bytes(b'[]{}"\\ a'[x % 8] for x in b)), limit=st.integers(2, 5)
)
def test_depth_check_agrees_with_the_full_scan(body: bytes, limit: int) -> None:
    for candidate in (body, b"[" + body):
        assert too_deep(candidate, limit) == too_deep_by_full_scan(candidate, limit)
