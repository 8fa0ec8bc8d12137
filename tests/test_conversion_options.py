"""`ConversionOptions`: inconsistent options are refused before anything loads."""

import pytest

from lastvit.conversion import ConversionError, ConversionOptions


@pytest.mark.parametrize(
    "options, message",
    [
        ({"top_k": 3}, "--top-k only apply with --pooling lazystrike"),
        ({"pooling": "lazystrike", "top_k": 2, "top_k_ratio": 0.5}, "not both"),
        ({"num_labels": -1}, "--num-labels must be >= 0"),
    ],
)
def test_inconsistent_options_are_refused(options, message):
    with pytest.raises(ConversionError, match=message):
        ConversionOptions(**options).validate()
