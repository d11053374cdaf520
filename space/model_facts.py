"""What the page says about the model it runs, read from the model's own card and config: its training data, its
held-out figures, how its scores depend on the query list. Nothing here is written for one checkpoint."""

from __future__ import annotations

from pathlib import Path

from modeling_supreme.pipeline_supreme import QUERY_LIST_NOTE

NOT_A_DEVICE = (
    "**Not a medical device.** A research model: its scores are not a diagnosis and must not guide the care of anyone."
)


def load_card(name: str):
    """The model card (`huggingface_hub.ModelCard`) of a local folder or Hub repo, or None where it has none."""
    from huggingface_hub import ModelCard

    try:
        readme = Path(name) / "README.md"
        return ModelCard.load(readme if readme.is_file() else name)
    except Exception:  # no card, no network, not a repo: the page says so instead
        return None


def training_data(card) -> str | None:
    """The card's "- data: ..." line of its Training section (the project's cards write one)."""
    for line in card.text.splitlines():
        if line.strip().startswith("- data:"):
            return line.strip()[len("- data:"):].strip()
    return None


def held_out_results(card) -> list[tuple[str, str, str, str]]:
    """(task, split, metric, value) of each result in the card's model-index."""
    rows = []
    for entry in card.data.to_dict().get("model-index") or []:
        for result in entry.get("results") or []:
            split = (result.get("dataset") or {}).get("split", "")
            for metric in result.get("metrics") or []:
                task = (result.get("task") or {}).get("name", "")
                rows.append((task, str(split), metric.get("name", metric.get("type", "")), str(metric.get("value"))))
    return rows


def query_list_note(config) -> str:
    if getattr(config, "fusion_query_attention", "self") == "all":
        return f"**Scores depend on the whole list.** This model's {QUERY_LIST_NOTE}."
    return (
        "This model scores each query on its own (`fusion_query_attention=\"self\"`): adding or removing a query does "
        "not change another's score. A model with `fusion_query_attention=\"all\"` (the paper's decoder) scores each "
        "query in the context of the whole list, so its scores depend on the list asked."
    )


def model_facts(name: str, config) -> str:
    """Markdown for the page: where the model came from, what its card reports, and what its scores are not."""
    card = load_card(name)
    lines = [f"**Model:** `{name}`."]
    if card is None:
        lines.append("Its card could not be read: no training data or held-out figures to show.")
    else:
        data = training_data(card)
        lines.append(f"**Trained on:** {data}." if data else "Its card does not say what it was trained on.")
        results = held_out_results(card)
        if results:
            lines += ["", "**Held-out figures, as its card reports them:**", "",
                      "| task | split | metric | value |", "|---|---|---|---|"]
            lines += [f"| {task} | {split} | {metric} | {value} |" for task, split, metric, value in results]
            lines.append("")
        else:
            lines.append("Its card reports no held-out figures.")
    lines += ["", query_list_note(config), "", NOT_A_DEVICE]
    return "\n".join(lines)
