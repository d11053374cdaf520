"""What the page says about the model it runs, read from the model's own card and config: its training data, its
held-out figures, how its scores depend on the query list. Nothing here is written for one checkpoint."""

from __future__ import annotations

from pathlib import Path

from modeling_supreme.pipeline_supreme import QUERY_LIST_NOTE

NOT_A_DEVICE = (
    "**Not a medical device.** A research model: its scores are not a diagnosis and must not guide the care of anyone."
)


def read_card(name: str) -> tuple[dict, str] | None:
    """(YAML metadata, Markdown body) of the model card of a local folder or Hub repo, as written (huggingface_hub's
    `ModelCard` regroups the model-index results of one task type and dataset under the first one's task name), or
    None where there is no card to read."""
    import yaml

    readme = Path(name) / "README.md"
    try:
        if not readme.is_file():
            from huggingface_hub import hf_hub_download

            readme = Path(hf_hub_download(name, "README.md"))
        _, front_matter, body = readme.read_text(encoding="utf-8").split("---", 2)
        return yaml.safe_load(front_matter) or {}, body
    except Exception:  # no card, no network, no front matter: the page says so instead
        return None


def training_data(body: str) -> str | None:
    """The card's "- data: ..." line of its Training section (the project's cards write one)."""
    for line in body.splitlines():
        if line.strip().startswith("- data:"):
            return line.strip()[len("- data:"):].strip()
    return None


def held_out_results(metadata: dict) -> list[tuple[str, str, str, str]]:
    """(task, split, metric, value) of each result in the card's model-index."""
    rows = []
    for entry in metadata.get("model-index") or []:
        for result in entry.get("results") or []:
            split = (result.get("dataset") or {}).get("split", "")
            for metric in result.get("metrics") or []:
                task = (result.get("task") or {}).get("name", "")
                rows.append((task, str(split), metric.get("name", metric.get("type", "")), str(metric.get("value"))))
    return rows


def query_list_note(config) -> str:
    if getattr(config, "fusion_query_attention", "self") == "all":
        return f"**Scores depend on the whole list.** {QUERY_LIST_NOTE[0].upper()}{QUERY_LIST_NOTE[1:]}."
    return (
        "This model scores each query on its own (`fusion_query_attention=\"self\"`): adding or removing a query does "
        "not change another's score. A model with `fusion_query_attention=\"all\"` (the paper's decoder) scores each "
        "query in the context of the whole list, so its scores depend on the list asked."
    )


def model_facts(name: str, config, shown_name: str | None = None) -> str:
    """Markdown for the page: where the model came from, what its card reports, and what its scores are not."""
    card = read_card(name)
    lines = [f"**Model:** `{shown_name or name}`."]
    if card is None:
        lines.append("Its card could not be read: no training data or held-out figures to show.")
    else:
        metadata, body = card
        data = training_data(body)
        lines.append(f"**Trained on:** {data}." if data else "Its card does not say what it was trained on.")
        results = held_out_results(metadata)
        if results:
            lines += ["", "**Figures on ECGs held out of its training, as its card reports them (the split says "
                      "which):**", "", "| task | split | metric | value |", "|---|---|---|---|"]
            lines += [f"| {task} | {split} | {metric} | {value} |" for task, split, metric, value in results]
            lines.append("")
        else:
            lines.append("Its card reports no held-out figures.")
    lines += ["", query_list_note(config), "", NOT_A_DEVICE]
    return "\n".join(lines)
