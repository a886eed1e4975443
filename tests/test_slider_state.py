"""The Generate page's slider values: which canvas reports the page takes."""

from __future__ import annotations

import numpy as np
import pytest

from dogvae import slider_state
from dogvae.components.latent_canvas import Report
from dogvae.latent import SliderBasis


@pytest.fixture
def sliders(monkeypatch) -> slider_state.SliderState:
    """Two sliders on the latent axes, their session a plain dict."""
    monkeypatch.setattr(slider_state.st, "session_state", {})
    basis = SliderBasis(np.zeros(2), np.eye(2), np.ones(2), ("z1", "z2"))
    state = slider_state.SliderState(basis, "generate-tiny")
    state.set(np.array([1.0, 1.0]))
    return state


def test_a_report_of_the_current_revision_is_taken_once(sliders) -> None:
    report = Report([0.5, -0.5], sliders.revision)
    assert sliders.take_report(report)
    assert sliders.values.tolist() == [0.5, -0.5]
    # The same report comes back on every rerun: not a new move.
    assert not sliders.take_report(Report([0.5, -0.5], sliders.revision))


def test_a_report_older_than_reset_does_not_undo_it(sliders) -> None:
    """A key press reported after Reset was clicked (both in flight) loses to Reset."""
    before = sliders.revision
    sliders.reset()
    assert not sliders.take_report(Report([0.25, 0.0], before))
    assert sliders.values.tolist() == [0.0, 0.0]


def test_the_same_values_after_a_reset_are_a_new_move(sliders) -> None:
    assert sliders.take_report(Report([0.5, 0.0], sliders.revision))
    sliders.reset()
    assert sliders.take_report(Report([0.5, 0.0], sliders.revision))
    assert sliders.values.tolist() == [0.5, 0.0]


def test_no_report_changes_nothing(sliders) -> None:
    assert not sliders.take_report(None)
    assert sliders.values.tolist() == [1.0, 1.0]
