"""Labelling MIMIC-IV-ECG's machine statements (SuPreME §3.1, appendix A.3/A.6).

`vocabulary` (the cardiac vocabulary data file), `rules` (the model-free labeller), `prompt` (the LLM prompt and its
parser), `extraction` (the rules/transformers/vllm backends behind one interface), `cache` (the on-disk response
cache), `mapping` (deduplication and mapping with a text encoder), `statistics` (stats.json and the frequency plot).
"""
