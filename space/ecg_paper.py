"""The 12 leads as a clinician reads them: 3 × 4 leads and a lead II rhythm strip on ECG grid paper, 25 mm/s, 10 mm/mV."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from modeling_supreme.processing_supreme import CANONICAL_LEADS  # noqa: E402

MM_PER_SECOND = 25.0
MM_PER_MV = 10.0
SECONDS = 10.0  # the standard record, and what the model reads
COLUMN_SECONDS = 2.5
LAYOUT = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
RHYTHM_LEAD = "II"
ROW_MM = 30.0  # baseline to baseline: room for ±1.5 mV
CALIBRATION_MM = 5.0  # the 1 mV, 0.2 s pulse at the start of each row
PIXELS_PER_MM = 4  # 1 mm squares 4 pixels wide: the grid stays readable at 1,100 pixels


def draw_ecg_paper(signal: np.ndarray, sampling_rate: float, title: str = "") -> Image.Image:
    """`signal` (12, samples) in mV in CANONICAL_LEADS order → an RGB image of the printed ECG (first 10 s).

    Each lead is drawn around its own baseline (the median of the part shown), as electrocardiographs remove the
    baseline wander before printing.
    """
    width_mm = CALIBRATION_MM + SECONDS * MM_PER_SECOND
    height_mm = ROW_MM * (len(LAYOUT) + 1)
    figure = plt.figure(figsize=(width_mm / 25.4, height_mm / 25.4), dpi=25.4 * PIXELS_PER_MM)
    axis = figure.add_axes((0, 0, 1, 1))
    axis.set_xlim(0, width_mm)
    axis.set_ylim(0, height_mm)
    axis.set_axis_off()
    _draw_grid(axis, width_mm, height_mm)

    index = {lead: row for row, lead in enumerate(CANONICAL_LEADS)}
    rows = [[(lead, column * COLUMN_SECONDS, COLUMN_SECONDS) for column, lead in enumerate(row)] for row in LAYOUT]
    rows.append([(RHYTHM_LEAD, 0.0, SECONDS)])
    for number, row in enumerate(rows):
        baseline = height_mm - ROW_MM * (number + 0.5)
        _draw_calibration(axis, baseline)
        for lead, start, seconds in row:
            first, last = int(round(start * sampling_rate)), int(round((start + seconds) * sampling_rate))
            part = signal[index[lead], first:last]
            if part.size == 0:  # a record shorter than 10 s: the rest of the paper stays empty
                continue
            x = CALIBRATION_MM + (start + np.arange(part.size) / sampling_rate) * MM_PER_SECOND
            axis.plot(x, baseline + (part - np.median(part)) * MM_PER_MV, color="black", linewidth=0.7)
            axis.text(x[0] + 1, baseline + 7, lead, fontsize=9, fontweight="bold")
            if start > 0:  # the short mark where one lead's 2.5 s give way to the next
                axis.plot([x[0], x[0]], [baseline - 3, baseline + 3], color="black", linewidth=0.7)
    axis.text(width_mm - 1, 2, f"25 mm/s   10 mm/mV   {title}".strip(), fontsize=8, ha="right")

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return Image.open(buffer).convert("RGB")


def _draw_grid(axis, width_mm: float, height_mm: float) -> None:
    """1 mm squares, every fifth line heavier (0.2 s × 0.5 mV)."""
    for step, line_width, alpha in ((1.0, 0.3, 0.35), (5.0, 0.8, 0.6)):
        style = dict(color="#e8a0a0", linewidth=line_width, alpha=alpha, zorder=0)
        axis.vlines(np.arange(0, width_mm + 0.01, step), 0, height_mm, **style)
        axis.hlines(np.arange(0, height_mm + 0.01, step), 0, width_mm, **style)


def _draw_calibration(axis, baseline: float) -> None:
    """The standard 1 mV step: 10 mm high, 0.2 s (5 mm) wide."""
    x = [0.0, 1.0, 1.0, 4.0, 4.0, CALIBRATION_MM]
    y = [baseline, baseline, baseline + MM_PER_MV, baseline + MM_PER_MV, baseline, baseline]
    axis.plot(x, y, color="black", linewidth=0.7)
