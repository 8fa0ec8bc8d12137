"""`ConversionOptions`: inconsistent options are refused before anything loads, and the torch-free
copies of the config's choices stay equal to the config's."""

import pytest

from lastvit.conversion import ConversionError, ConversionOptions
from lastvit.conversion import options as conversion_options
from modeling_lastvit import configuration_lastvit


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


def test_the_torch_free_choices_equal_the_configs():
    assert conversion_options.POOLING_TYPES == configuration_lastvit.POOLING_TYPES
    assert conversion_options.SCORE_RULES == configuration_lastvit.SCORE_RULES
