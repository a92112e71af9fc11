"""The pyfunc model's input rules and pins (no training; the round trip on a trained run is in test_predict.py)."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pandas as pd
import pytest

from crmlab.registry import CrmlabError
from crmlab.runners.data import encode
from crmlab.runners.inference._mlflow_model import encode_frame, pip_requirements


def test_sequences_are_encoded_as_crmlab_predict_encodes_them(real_sequences: list[str]) -> None:
    frame = pd.DataFrame({"id": range(3), "sequence": [real_sequences[0].lower(), "ACGTN", real_sequences[1] + "GGGG"]})
    tokens = encode_frame(frame, 112)
    np.testing.assert_array_equal(tokens, encode([real_sequences[0], "ACGTN", real_sequences[1] + "GGGG"]))
    assert tokens.shape == (3, 112) and (tokens[1, 5:] == 0).all()  # padded with N, cut at the 3' end


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"seq": ["ACGT"]}), "input: no column 'sequence' (columns: seq)"),
        (pd.DataFrame({"sequence": ["ACGT", None]}), "sequence:2: empty sequence"),
        (pd.DataFrame({"sequence": ["", "ACGT"]}), "sequence:1: empty sequence"),
        (pd.DataFrame({"sequence": ["ACGT", 7]}), "sequence:2: expected a DNA sequence, got 7"),
        (
            pd.DataFrame({"sequence": ["ACGT", "AC GT"]}),
            "sequence:2: sequence has ' ' at position 3; allowed: A, C, G, T, N",
        ),
    ],
)
def test_bad_input_is_a_one_line_error_naming_the_row(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(CrmlabError) as error:
        encode_frame(frame, 112)
    assert str(error.value) == message


def test_requirements_pin_crmlab_keras_and_the_backend_at_their_installed_versions() -> None:
    pins = pip_requirements("tensorflow")
    assert pins == [f"{name}=={metadata.version(name)}" for name in ("crmlab", "keras", "tensorflow")]
