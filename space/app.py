"""SuPreME's Space: ask a 12-lead ECG any cardiac question in free text and see how it answers, and where it looked.

    supreme app [--model DIR_OR_REPO] [--port N] [--host ADDRESS]        (the same as: python space/app.py ...)

The model is loaded once (default: the repository's shipped checkpoint, as for `supreme classify`); each query list is
encoded once and kept, the preset lists at start-up. One function per action: `classify` (an ECG and a query list →
scores, the printed ECG, the attention of the top query, a JSON file) and `explain` (another query's attention, from
what `classify` kept). Bad input is answered with one readable message (`gr.Error`), never a stack trace.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import tempfile
from pathlib import Path

import gradio as gr
import matplotlib

matplotlib.use("Agg")  # images only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from ecg_input import check_leads, read_uploaded_ecg  # noqa: E402
from ecg_paper import draw_ecg_paper  # noqa: E402
from model_facts import model_facts  # noqa: E402

from modeling_supreme.processing_supreme import CANONICAL_LEADS, canonical_lead_index, read_ecg_file  # noqa: E402
from training.attention_plots import cross_attention_maps, draw_attention_panel  # noqa: E402
from training.cli import DEFAULT_MODEL, CommandError, load_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROMPTS_DIR = REPO / "training" / "prompts"  # the benchmarks' class → query files (training/prompts/README.md)
PTBXL_TESTS = REPO / "tests" / "data" / "ptbxl" / "records500" / "00000"
PTBXL_DEMO = REPO / "training" / "demo_data" / "ptbxl" / "records500" / "00000"
# Real ECGs shipped in the repository, none of them in the shipped model's training folds (PTB-XL 1-7), each with what
# its source says it shows (PTB-XL's SCP-ECG statements with their likelihood, CPSC's and CinC's labels).
EXAMPLES = {
    "PTB-XL 9: normal ECG": (PTBXL_TESTS / "00009_hr",
                             "PTB-XL ecg_id 9 (fold 10): normal ECG (100 %), sinus rhythm."),
    "PTB-XL 180: left bundle branch block": (PTBXL_DEMO / "00180_hr",
                                             "PTB-XL ecg_id 180 (fold 10): complete left bundle branch block (100 %), "
                                             "sinus rhythm."),
    "PTB-XL 195: right bundle branch block": (PTBXL_DEMO / "00195_hr",
                                              "PTB-XL ecg_id 195 (fold 9): complete right bundle branch block "
                                              "(100 %), sinus rhythm."),
    "PTB-XL 17: atrial flutter": (PTBXL_TESTS / "00017_hr",
                                  "PTB-XL ecg_id 17 (fold 9): atrial flutter (100 %), atrial fibrillation, "
                                  "abnormal QRS."),
    "CPSC-2018 A1984: ST depression": (REPO / "tests" / "data" / "cpsc2018" / "A1984.mat",
                                       "CPSC-2018 A1984 (MERL's test split, 19 s; the model reads the first 10 s): "
                                       "ST-segment depression."),
    "Chapman-Shaoxing-Ningbo JS20000": (REPO / "tests" / "data" / "cinc2021" / "JS20000",
                                        "CinC 2021 JS20000 (Chapman-Shaoxing-Ningbo): premature atrial contraction, "
                                        "sinus tachycardia, nonspecific intraventricular conduction disorder, "
                                        "ST changes."),
}
# The one-click examples ask each ECG a benchmark's whole class list, one that holds what its source says it shows.
EXAMPLE_PRESETS = {
    "PTB-XL 9: normal ECG": "PTB-XL super-class (5)",
    "PTB-XL 180: left bundle branch block": "PTB-XL sub-class (23)",
    "PTB-XL 195: right bundle branch block": "PTB-XL sub-class (23)",
    "PTB-XL 17: atrial flutter": "PTB-XL rhythm (12)",
    "CPSC-2018 A1984: ST depression": "CPSC-2018 (9)",
    "Chapman-Shaoxing-Ningbo JS20000": "CPSC-2018 (9)",
}
PRESETS = {
    "PTB-XL super-class (5)": "ptbxl_super_class",
    "PTB-XL sub-class (23)": "ptbxl_sub_class",
    "PTB-XL form (19)": "ptbxl_form",
    "PTB-XL rhythm (12)": "ptbxl_rhythm",
    "CPSC-2018 (9)": "cpsc2018",
}
DEFAULT_QUERIES = "normal ECG\nsinus rhythm\natrial fibrillation\nleft bundle branch block\nmyocardial infarction"
MAX_QUERIES = 200
# System fonts only: the page must not wait on a font server (offline machines, the browser test).
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])

logger = logging.getLogger("supreme.space")


class Space:
    """The model, its processor and the query lists already encoded; what each action of the page computes."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        self.model, self.processor = load_model(model_name, "cpu")
        self.presets = {label: list(json.loads((PROMPTS_DIR / f"{stem}.json").read_text()).values())
                        for label, stem in PRESETS.items()}
        self.query_states = functools.lru_cache(maxsize=64)(self._query_states)
        for queries in self.presets.values():
            self.query_states(tuple(queries))
        shown = Path(model_name).resolve()
        self.facts = model_facts(model_name, self.model.config,
                                 str(shown.relative_to(REPO)) if shown.is_relative_to(REPO) else model_name)
        self.outputs = Path(tempfile.mkdtemp(prefix="supreme-space-"))

    @torch.no_grad()
    def _query_states(self, queries: tuple[str, ...]):
        embeds = self.model.encode_queries(
            list(queries), self.processor.tokenizer, max_length=self.processor.query_max_length
        )
        return self.model.get_query_states(embeds)

    def classify(self, files, example, sampling_rate, lead_names, queries_text):
        """An ECG (uploaded files, else the example) and one query per line → what the page shows."""
        try:
            return self._classify(files, example, sampling_rate, lead_names, queries_text)
        except gr.Error:
            raise
        except ValueError as error:
            raise gr.Error(str(error), print_exception=False) from None
        except Exception as error:  # the page shows a sentence, the server log the traceback
            logger.exception("classify failed")
            raise gr.Error(f"This ECG could not be scored ({type(error).__name__}: {error}).") from None

    def _classify(self, files, example, sampling_rate, lead_names, queries_text):
        queries = list(dict.fromkeys(line.strip() for line in (queries_text or "").splitlines() if line.strip()))
        if not queries:
            raise ValueError("No query: type at least one, one per line, or pick a preset list.")
        if len(queries) > MAX_QUERIES:
            raise ValueError(f"{len(queries)} queries: ask at most {MAX_QUERIES} at once.")
        separator = "," if "," in (lead_names or "") else None  # "I, II, ..." or "I II ..."
        names = [name.strip() for name in (lead_names or "").split(separator) if name.strip()] or list(CANONICAL_LEADS)
        if files:
            signal, rate, leads, description = read_uploaded_ecg(files, sampling_rate, names)
            title = description
        elif example in EXAMPLES:
            path, source = EXAMPLES[example]
            signal, rate, leads = read_ecg_file(path)
            description, title = f"example: {source}", example
        else:
            raise ValueError("No ECG: upload a record or an array, or pick an example.")
        check_leads(leads)
        processed, attention, probabilities = cross_attention_maps(
            self.model, self.processor, signal, queries, sampling_rate=rate, lead_names=leads,
            query_states=self.query_states(tuple(queries)),
        )
        scores = sorted(zip(queries, probabilities.tolist(), strict=True), key=lambda pair: -pair[1])
        kept = {"signal": processed, "attention": attention, "queries": queries, "probabilities": probabilities}
        ordered = signal[canonical_lead_index(leads)]
        seconds = signal.shape[1] / rate
        summary = f"**ECG:** {description.rstrip('.')} ({len(leads)} leads, {rate:g} Hz, {seconds:.1f} s)."
        bars = pd.DataFrame({"query": [q for q, _ in scores], "probability": [p for _, p in scores]})
        table = bars.assign(probability=[f"{p:.4f}" for _, p in scores])  # four decimals, as `supreme classify` prints
        return (
            summary,
            table,
            bars,
            draw_ecg_paper(ordered, rate, title=title),
            gr.update(choices=[q for q, _ in scores], value=scores[0][0]),
            self.draw_attention(kept, scores[0][0]),
            self.write_scores(description, scores),
            kept,
        )

    def explain(self, kept, query):
        """Another query's attention, from what `classify` kept (no model call)."""
        if not kept or query not in kept["queries"]:
            return None
        return self.draw_attention(kept, query)

    def draw_attention(self, kept, query):
        position = kept["queries"].index(query)
        figure, axis = plt.subplots(figsize=(12, 4), dpi=100)
        draw_attention_panel(axis, kept["signal"], kept["attention"][position], query,
                             float(kept["probabilities"][position]), self.model.config.sampling_rate)
        figure.tight_layout()
        figure.canvas.draw()
        image = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
        plt.close(figure)
        return image

    def write_scores(self, description, scores) -> str:
        path = Path(tempfile.mkdtemp(dir=self.outputs)) / "supreme_scores.json"
        path.write_text(json.dumps({
            "model": self.model_name,
            "ecg": description,
            "fusion_query_attention": getattr(self.model.config, "fusion_query_attention", "self"),
            "scores": [{"query": query, "probability": probability} for query, probability in scores],
        }, indent=2))
        return str(path)

    def preset_queries(self, label):
        return "\n".join(self.presets.get(label, []))


def build_demo(space: Space) -> gr.Blocks:
    with gr.Blocks(title="SuPreME: ask an ECG", analytics_enabled=False) as demo:
        gr.Markdown(
            "# SuPreME: ask a 12-lead ECG any cardiac question\n"
            "Upload an ECG or pick a real one, type what you want to know (one query per line), and read a "
            "probability per query, the ECG as printed, and where in the ECG the model looked."
        )
        kept = gr.State()
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label="ECG files: a WFDB record (.hea + .dat, or CinC .mat + .hea; select all its "
                                "files at once), a CPSC-2018 .mat, or a .npy / .csv array (leads × samples)",
                                file_count="multiple", file_types=[".hea", ".dat", ".mat", ".npy", ".csv"])
                with gr.Accordion("Array files: sampling rate and lead names", open=False):
                    sampling_rate = gr.Number(value=500, label="sampling rate (Hz)")
                    lead_names = gr.Textbox(value=", ".join(CANONICAL_LEADS), label="lead names, in row order")
                example = gr.Dropdown(list(EXAMPLES), value=next(iter(EXAMPLES)),
                                      label="or a real example ECG (used when no file is uploaded)")
                preset = gr.Dropdown(list(PRESETS), value=None, label="preset query list (fills the queries)")
                queries = gr.Textbox(value=DEFAULT_QUERIES, lines=8, label="Queries, one per line")
                submit = gr.Button("Classify", variant="primary")
            with gr.Column(scale=2):
                summary = gr.Markdown()
                with gr.Row():
                    table = gr.Dataframe(label="probability per query", interactive=False, elem_id="scores")
                    bars = gr.BarPlot(x="query", y="probability", sort="-y", y_lim=[0, 1], x_label_angle=-45,
                                      label="probabilities, sorted")
                # captions as Markdown: an Image's label would cover the top of the picture
                gr.Markdown("**The ECG**: 3 × 4 leads and a lead II rhythm strip, 25 mm/s, 10 mm/mV")
                paper = gr.Image(show_label=False, type="pil", format="png", elem_id="ecg-paper")
                explained = gr.Dropdown(label="where this query looked (CFN cross-attention over leads and time)",
                                        choices=[])
                attention = gr.Image(show_label=False, format="png", elem_id="attention")
                download = gr.File(label="scores (JSON)")
        gr.Markdown(space.facts)

        outputs = [summary, table, bars, paper, explained, attention, download, kept]
        inputs = [files, example, sampling_rate, lead_names, queries]
        submit.click(space.classify, inputs, outputs, api_name="classify")
        preset.input(space.preset_queries, preset, queries, api_visibility="private")
        # .input, not .change: classify sets the query itself and draws its attention already
        explained.input(space.explain, [kept, explained], attention, api_visibility="private")
        gr.Examples(
            [[name, space.preset_queries(preset)] for name, preset in EXAMPLE_PRESETS.items()],
            inputs=[example, queries],
            outputs=outputs,
            fn=lambda name, text: space.classify(None, name, 500, "", text),
            run_on_click=True,
            cache_examples=False,
            label="examples: one click scores a real ECG",
        )
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="supreme app", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help=f"a saved SuPreME folder or Hub repo id (default: {DEFAULT_MODEL.name}, "
                        "the shipped model)")
    parser.add_argument("--port", type=int, help="port (default: $GRADIO_SERVER_PORT, else 7860)")
    parser.add_argument("--host", help="address to listen on (default: $GRADIO_SERVER_NAME, else 127.0.0.1)")
    args = parser.parse_args(argv)
    try:
        if args.model is None and not DEFAULT_MODEL.is_dir():
            raise CommandError(f"no --model given and the shipped model {DEFAULT_MODEL} is not there")
        space = Space(args.model or str(DEFAULT_MODEL))
    except CommandError as error:
        print(f"supreme app: error: {error}", file=sys.stderr)
        sys.exit(2)
    build_demo(space).launch(server_name=args.host, server_port=args.port, theme=THEME, footer_links=["api"])


if __name__ == "__main__":
    main()
