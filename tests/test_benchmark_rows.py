"""benchmarks/common.py append_rows: one JSON line per row, with where, when and how it was measured."""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from common import append_rows  # noqa: E402


def test_append_rows_adds_context_and_appends(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(REPO / "benchmarks" / "bench_x.py"), "--batch", "2"])
    path = append_rows("bench_x", [{"ecg_per_s": 1.5}, {"ecg_per_s": 2.0, "load_avg_1min": 0.5}], directory=tmp_path)
    append_rows("bench_x", [{"ecg_per_s": 3.0}], directory=tmp_path)
    append_rows("bench_x", [{"ecg_per_s": 4.0}], directory=tmp_path, dry_run=True)
    assert path == tmp_path / "bench_x.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [row["ecg_per_s"] for row in rows] == [1.5, 2.0, 3.0]
    for row in rows:
        assert row["benchmark"] == "bench_x"
        assert "cores)" in row["machine"] and row["torch"]
        assert row["date"].endswith("+00:00")
        assert row["command"] == "python benchmarks/bench_x.py --batch 2"
    assert rows[1]["load_avg_1min"] == 0.5  # a row's own figure wins over the context's
