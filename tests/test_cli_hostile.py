"""Hostile CLI values (issue 19): never a traceback, a hang or a silent wrong answer.

The core refuses non-finite numbers and empty strings (core/options.coerce); cli/options.py passes every
value Typer parsed through it, so both front ends (Typer and cli/fast.py) agree.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cli_helpers import invoke


@settings(derandomize=True, max_examples=4, database=None, deadline=None)
@given(value=st.sampled_from(["inf", "-inf", "nan", "1e309"]))
def test_cli_refuses_non_finite_lora_alpha(capsys: pytest.CaptureFixture[str], value: str) -> None:
    code, _out, err = invoke(["estimate", "llama-3.1-8b", "--method", "lora", "--lora-alpha", value,
                              "--format", "json"], capsys)
    assert code == 2 and "--lora-alpha" in err


@settings(derandomize=True, max_examples=3, database=None, deadline=None)
@given(value=st.sampled_from(["", " ", "\t"]))
def test_cli_refuses_an_empty_gpu(capsys: pytest.CaptureFixture[str], value: str) -> None:
    code, _out, err = invoke(["estimate", "llama-3.1-8b", "--gpu", value], capsys)
    assert code == 2 and "--gpu" in err
