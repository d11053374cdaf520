"""Where each query looked: the CFN cross-attention drawn under the 12-lead ECG, one panel per query."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from modeling_supreme.processing_supreme import CANONICAL_LEADS  # noqa: E402

PANEL_SIZE = (12.0, 4.0)  # inches per query panel
DPI = 100


@torch.no_grad()
def cross_attention_maps(
    model, processor, ecg, queries, sampling_rate=None, lead_names=None, layer: int = -1, query_states=None
):
    """Score one ECG against `queries` and return what the plot draws.

    `query_states` (`model.get_query_states` of these queries), where given, spares encoding the queries again: the
    Space keeps them per query list.

    Returns:
        signal: `(12, num_samples)` preprocessed ECG; attention: `(num_queries, 12, num_patches)` cross-attention of
        CFN layer `layer`, averaged over heads, each query's map summing to 1; probabilities: `(num_queries,)`.
    """
    if isinstance(queries, str):
        queries = [queries]
    if not queries:
        raise ValueError("give at least one query to explain")
    inputs = processor(ecg=ecg, sampling_rate=sampling_rate, lead_names=lead_names, return_tensors="pt")
    if inputs["input_values"].shape[0] != 1:
        raise ValueError("explain one ECG at a time")
    input_values = inputs["input_values"].to(model.device)
    if query_states is None:
        query_embeds = model.encode_queries(list(queries), processor.tokenizer, max_length=processor.query_max_length)
        output = model(input_values=input_values, query_embeds=query_embeds, output_attentions=True)
    else:
        output = model(input_values=input_values, query_states=query_states, output_attentions=True)
    config = model.config
    attention = output.cross_attentions[layer][0].mean(0).reshape(len(queries), config.num_leads, config.num_patches)
    probabilities = torch.sigmoid(output.logits[0].float())
    return input_values[0].float().cpu().numpy(), attention.float().cpu().numpy(), probabilities.cpu().numpy()


def plot_cross_attention(
    model,
    processor,
    ecg,
    queries: list[str] | str,
    output: str | Path,
    sampling_rate: float | None = None,
    lead_names: list[str] | None = None,
    layer: int = -1,
) -> Path:
    """Write a PNG with one panel per query: the leads × time attention heatmap under the 12 traces.

    The image is `PANEL_SIZE` inches per query at `DPI` (1200 × 400 pixels per panel).
    """
    queries = [queries] if isinstance(queries, str) else list(queries)
    signal, attention, probabilities = cross_attention_maps(
        model, processor, ecg, queries, sampling_rate, lead_names, layer
    )
    figure, axes = plt.subplots(
        len(queries), 1, figsize=(PANEL_SIZE[0], PANEL_SIZE[1] * len(queries)), dpi=DPI, squeeze=False
    )
    for axis, query, heatmap, probability in zip(axes[:, 0], queries, attention, probabilities, strict=True):
        draw_attention_panel(axis, signal, heatmap, query, probability, model.config.sampling_rate)
    figure.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=DPI)
    plt.close(figure)
    return output


def draw_attention_panel(axis, signal, heatmap, query: str, probability: float, sampling_rate: float) -> None:
    """One query's panel: its `(12, num_patches)` attention `heatmap` under the `(12, num_samples)` preprocessed
    `signal`, titled with the query and its probability."""
    num_leads, num_samples = signal.shape
    seconds = num_samples / sampling_rate
    time = np.linspace(0, seconds, num_samples, endpoint=False)
    # Each lead drawn in its own row, centred and scaled to 80 % of the row's height.
    centred = signal - signal.mean(axis=1, keepdims=True)
    traces = centred / (np.abs(centred).max() + 1e-8) * 0.4
    image = axis.imshow(heatmap, aspect="auto", cmap="Reds", extent=(0, seconds, num_leads, 0), interpolation="nearest")
    for lead in range(num_leads):
        axis.plot(time, lead + 0.5 - traces[lead], color="black", linewidth=0.5)
    axis.set_yticks(np.arange(num_leads) + 0.5, CANONICAL_LEADS[:num_leads])
    axis.set_xlabel("time (s)")
    axis.set_title(f'"{query}"  p = {probability:.3f}', fontsize=11)
    axis.figure.colorbar(image, ax=axis, fraction=0.02, pad=0.01, label="attention")
