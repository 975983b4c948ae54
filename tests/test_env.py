"""`qalign.env.env_flag`: one reader of on/off environment variables, spelled as the library owning the variable."""

from __future__ import annotations

import pytest

from qalign.env import HUGGINGFACE_TRUE, env_flag

SPELLINGS = ["1", "true", "TRUE", "True", "y", "Y", "yes", "on", "ON", "0", "false", "no", "off", "", "2", " 1"]


@pytest.mark.parametrize("value", SPELLINGS)
def test_the_default_spelling_is_llamafactorys(value: str, monkeypatch) -> None:
    from llamafactory.extras.misc import is_env_enabled

    monkeypatch.setenv("QALIGN_TEST_FLAG", value)
    assert env_flag("QALIGN_TEST_FLAG") == is_env_enabled("QALIGN_TEST_FLAG")


@pytest.mark.parametrize("value", SPELLINGS)
def test_hugging_face_variables_read_as_huggingface_hub_reads_them(value: str, monkeypatch) -> None:
    from huggingface_hub.constants import _is_true

    monkeypatch.setenv("QALIGN_TEST_FLAG", value)
    assert env_flag("QALIGN_TEST_FLAG", HUGGINGFACE_TRUE) == _is_true(value)


def test_unset_is_off(monkeypatch) -> None:
    monkeypatch.delenv("QALIGN_TEST_FLAG", raising=False)
    assert not env_flag("QALIGN_TEST_FLAG") and not env_flag("QALIGN_TEST_FLAG", HUGGINGFACE_TRUE)
