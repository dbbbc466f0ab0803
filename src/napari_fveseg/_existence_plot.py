"""A small plot of the per-slice existence probability of each prompt (the ISD's decisions).

One line per prompt over the slices, the existence threshold as a dashed line (slices whose probability
is above it keep their mask) and the current slice as a vertical marker. Plain QPainter: no plotting
library needed.
"""

from __future__ import annotations

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

LINE_COLOURS = ("#ff7f0e", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


class ExistencePlot(QWidget):
    """Existence probability (0–1, vertical) per slice (horizontal) for each prompt."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.existence: dict[str, list[float]] = {}
        self.threshold = 0.5
        self.current: int | None = None
        self.setMinimumHeight(90)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setToolTip("Existence probability per slice; masks are kept where it is above the dashed line.")

    def set_data(
        self, existence: dict[str, list[float]], threshold: float, current: int | None = None
    ) -> None:
        self.existence, self.threshold, self.current = existence, threshold, current
        self.update()

    def set_current(self, current: int | None) -> None:
        if current != self.current:
            self.current = current
            self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        margin, legend = 6, 14
        width, height = self.width() - 2 * margin, self.height() - 2 * margin - legend
        painter.fillRect(self.rect(), QColor("#262930"))
        if not self.existence or width <= 0 or height <= 0:
            painter.setPen(QColor("#aaaaaa"))
            painter.drawText(self.rect(), Qt.AlignCenter, "existence per slice appears after a run")
            return
        slices = max(len(v) for v in self.existence.values())

        def point(index: float, value: float) -> QPointF:
            x = margin + (index / max(slices - 1, 1)) * width
            return QPointF(x, margin + (1.0 - value) * height)

        painter.setPen(QPen(QColor("#888888"), 1, Qt.DashLine))
        painter.drawLine(point(0, self.threshold), point(slices - 1, self.threshold))
        if self.current is not None and 0 <= self.current < slices:
            painter.setPen(QPen(QColor("#dddddd"), 1))
            painter.drawLine(point(self.current, 0.0), point(self.current, 1.0))
        for number, (prompt, values) in enumerate(self.existence.items()):
            colour = QColor(LINE_COLOURS[number % len(LINE_COLOURS)])
            painter.setPen(QPen(colour, 2))
            painter.drawPolyline(QPolygonF([point(i, float(v)) for i, v in enumerate(values)]))
            painter.drawText(margin + number * 90, self.height() - 3, prompt[:14])
        painter.end()
