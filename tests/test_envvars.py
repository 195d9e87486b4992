"""Scoped environment variables: whatever happens inside the block, the outside environment is restored."""

from __future__ import annotations

import os

import pytest

from nhl.envvars import keep_environ, scoped_environ


def test_keep_environ_restores_set_and_unset_names(monkeypatch):
    monkeypatch.setenv("NHL_T_SET", "before")
    monkeypatch.delenv("NHL_T_UNSET", raising=False)
    with keep_environ("NHL_T_SET", "NHL_T_UNSET"):
        os.environ["NHL_T_SET"] = "inside"
        os.environ["NHL_T_UNSET"] = "inside"
        os.environ["NHL_T_OTHER"] = "kept"  # not protected: stays
    assert os.environ["NHL_T_SET"] == "before" and "NHL_T_UNSET" not in os.environ
    assert os.environ.pop("NHL_T_OTHER") == "kept"


def test_scoped_environ_sets_for_the_block_only_even_on_error(monkeypatch):
    monkeypatch.setenv("NHL_T_A", "outer")
    monkeypatch.delenv("NHL_T_B", raising=False)
    with pytest.raises(RuntimeError):
        with scoped_environ({"NHL_T_A": "1", "NHL_T_B": "2"}):
            assert (os.environ["NHL_T_A"], os.environ["NHL_T_B"]) == ("1", "2")
            raise RuntimeError("boom")
    assert os.environ["NHL_T_A"] == "outer" and "NHL_T_B" not in os.environ
