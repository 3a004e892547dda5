"""Shared docstring sections are filled into every public estimator's docstring."""

import re

import pytest

import skflow
from skflow.base import SHARED_DOCSTRING_SECTIONS

PUBLIC_CLASSES = [getattr(skflow, name) for name in skflow.__all__ if isinstance(getattr(skflow, name), type)]


@pytest.mark.parametrize("cls", PUBLIC_CLASSES, ids=lambda cls: cls.__name__)
def test_no_placeholder_is_left_unfilled(cls: type) -> None:
    assert cls.__doc__, f"{cls.__name__} has no docstring"
    assert not re.search(r"\{(shared|exact)_[a-z_]+\}", cls.__doc__)


def test_families_using_the_shared_sections_show_them() -> None:
    training = SHARED_DOCSTRING_SECTIONS["{shared_training_parameters}"]
    for cls in (skflow.RealNVPDensity, skflow.MAFDensity, skflow.NeuralSplineDensity, skflow.PlanarFlowDensity):
        assert training in cls.__doc__
