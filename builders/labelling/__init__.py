"""Labelling MIMIC-IV-ECG's machine statements (SuPreME §3.1, appendix A.3/A.6).

`vocabulary` (the cardiac vocabulary data file), `rules` (the model-free labeller), `prompt` (the LLM prompt, its
response schema and parser), `causal_lm` (a local instruct model: checked loading, batched chat generation),
`extraction` (the rules/transformers/vllm backends behind one interface, and `RulesFirst`), `cache` (the on-disk
response cache), `mapping` (deduplication and mapping with a text encoder), `study_agreement` (a labeller against a
public study's reading of 546 real statements), `statistics` (stats.json and the frequency plot).
"""
