"""The Generate page's latent sliders as session state, whichever path draws them.

The values live in ``st.session_state`` under keys of their own, per run (another
model's values mean nothing for this one). The browser's canvas
(``dogvae.components.latent_canvas``) and the server's ``st.slider`` widgets both
read them; the page's own moves (Reset, Random point, a photo, the start at a dog)
raise a revision so that the canvas takes them over the user's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st

from dogvae.components.latent_canvas import Report
from dogvae.latent import SliderBasis

LIMIT = 3.0  # sliders and pad run from -LIMIT to +LIMIT
STEP = 0.05


@dataclass(frozen=True)
class SliderState:
    """A run's slider values in the session.

    Attributes:
        basis: The run's slider axes.
        prefix: Starts every session key (e.g. ``generate-<run name>``).
    """

    basis: SliderBasis
    prefix: str

    @property
    def widget_keys(self) -> list[str]:
        """The server path's ``st.slider`` keys, one per axis."""
        return [f"{self.prefix}-z{index}" for index in range(1, len(self.basis.labels) + 1)]

    @property
    def canvas_key(self) -> str:
        return f"{self.prefix}-canvas"

    def _key(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    @property
    def started(self) -> bool:
        return self._key("values") in st.session_state

    @property
    def values(self) -> np.ndarray:
        return np.array(st.session_state[self._key("values")], dtype=np.float64)

    @property
    def residual(self) -> np.ndarray | None:
        """What the sliders cannot show of a point put on them (a photo's, a dog's), or None."""
        return st.session_state.get(self._key("residual"))

    @property
    def revision(self) -> int:
        return st.session_state.get(self._key("revision"), 0)

    def point(self, values: np.ndarray | None = None) -> np.ndarray:
        """The latent point of ``values`` (default the current ones), the residual added."""
        return self.basis.to_point(self.values if values is None else values, self.residual)

    def set(self, values: np.ndarray) -> None:
        """The page's own values: they replace the user's, on either path."""
        # On the slider's grid, so the widget shows exactly the value used.
        rounded = [round(round(float(value) / STEP) * STEP, 2) for value in values]
        st.session_state[self._key("values")] = rounded
        for key, value in zip(self.widget_keys, rounded, strict=True):
            st.session_state[key] = value
        st.session_state[self._key("revision")] = self.revision + 1

    def reset(self) -> None:
        """All sliders at 0 (the average dog, or the origin), no residual."""
        self.set(np.zeros(len(self.basis.labels)))
        st.session_state.pop(self._key("residual"), None)

    def random(self) -> None:
        """Each slider from a standard normal, clipped to the sliders' range; no residual."""
        values = np.random.default_rng().standard_normal(len(self.basis.labels))
        self.set(np.clip(values, -LIMIT, LIMIT))
        st.session_state.pop(self._key("residual"), None)

    def move_to(self, point: np.ndarray, *, exact: bool = True) -> None:
        """Put ``point`` on the sliders and keep what they cannot show as the residual.

        Args:
            point: (latent_dim,) the point.
            exact: The residual also takes up the sliders' rounding (and clipping), so
                that the sliders' point is ``point`` itself (a photo's reconstruction);
                otherwise only what lies outside the sliders' directions, so that the
                sliders' values are the point's coordinates along them.
        """
        values, outside = self.basis.from_point(point)
        self.set(np.clip(values, -LIMIT, LIMIT))
        residual = point - self.basis.to_point(self.values) if exact else outside
        st.session_state[self._key("residual")] = np.asarray(residual, dtype=np.float32)

    def take_widgets(self, values: list[float]) -> None:
        """The server path's slider widgets' values, as the user left them."""
        st.session_state[self._key("values")] = [float(value) for value in values]

    def take_report(self, report: Report | None) -> bool:
        """Take the canvas' newest report as the values; False when there is none new.

        A report stays in the canvas' state after the page sets values of its own
        (Reset), so only a report other than the last one taken is the user's move;
        and one of an older revision than the page's values was moved from values
        the page has replaced since (Reset clicked before it arrived): dropped.
        """
        taken = self._key("taken")
        if report is None or report.revision != self.revision:
            return False
        if report == st.session_state.get(taken):
            return False
        st.session_state[taken] = report
        st.session_state[self._key("values")] = [float(value) for value in report.values]
        return True
