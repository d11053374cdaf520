"""Write ECG datasets as the Hub expects them: Parquet shards, a dataset card with YAML `configs`, and an upload.

Every builder writes the dataset schema (docs/dataset_schema.md) (`ecg_features`) through `write_split`, then one `write_dataset_card`, so that
`datasets.load_dataset(out_dir, config_name)` reads the folder and `push_to_hub` publishes it unchanged.

The `ecg` column (12 x 5000 int16, 120 kB a record) is assembled straight from numpy buffers into Arrow: going through
Python lists would cost more than reading the WFDB file. Shards stay under 500 MB (uncompressed size, an upper bound
on the file) and row groups hold 100 records (~12 MB), small enough for the Hub's dataset viewer.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from datasets.features.features import encode_nested_example

from modeling_supreme.processing_supreme import fit_length, resample

ECG_SHAPE = (12, 5000)
SAMPLING_RATE = 500.0
MAX_SHARD_BYTES = 500 * 1000**2
ROWS_PER_GROUP = 100
DEFAULT_CONFIG = "default"


def to_schema_ecg(digital: np.ndarray, fs: float, first_samples: int | None = None) -> np.ndarray:
    """(12, n) digital samples at `fs` Hz -> int16 (12, 5000) at 500 Hz, as the `ecg` column stores them.

    Resampling is polyphase (the processor's `resample`), rounded back to ADC units and clipped to int16; then the
    first 5000 samples are kept (zero-padded when shorter). `first_samples` keeps only the first N samples at 500 Hz and
    zero-pads the rest (MERL's CPSC-2018 protocol: N = 2500).
    """
    x = digital
    if fs != SAMPLING_RATE:
        int16 = np.iinfo(np.int16)
        x = np.clip(np.rint(resample(np.asarray(x, dtype=np.float64), fs, SAMPLING_RATE)), int16.min, int16.max)
    if first_samples is not None:
        x = x[:, :first_samples]
    return np.asarray(fit_length(x, ECG_SHAPE[1]), dtype=np.int16)


def ecg_features(class_names: Sequence[str], extra: Mapping[str, datasets.features.FeatureType] | None = None
                 ) -> datasets.Features:
    """The dataset schema (docs/dataset_schema.md); `class_names` (the query list) become the `labels` ClassLabel names; `extra` appends columns."""
    features = {
        "id": datasets.Value("string"),
        "subject_id": datasets.Value("string"),
        "ecg": datasets.Array2D(ECG_SHAPE, "int16"),
        "adc_gain": datasets.List(datasets.Value("float32"), length=ECG_SHAPE[0]),
        "report": datasets.Value("string"),
        "labels": datasets.List(datasets.ClassLabel(names=list(class_names))),
    }
    for name, feature in (extra or {}).items():
        if name in features:
            raise ValueError(f"extra column {name!r} is already part of the ECG schema")
        features[name] = feature
    return datasets.Features(features)


def write_split(rows: Iterable[Mapping], features: datasets.Features, out_dir: str | os.PathLike, split: str,
                config_name: str | None = None, *, max_shard_bytes: int = MAX_SHARD_BYTES,
                rows_per_group: int = ROWS_PER_GROUP) -> list[Path]:
    """Write `rows` (dicts keyed by the feature names) as `out_dir/<config_name or "data">/<split>-XXXXX-of-YYYYY.parquet`.

    `ecg` values are int16-castable arrays of shape (12, 5000); `labels` may be class names or indices. Shards of an
    earlier write of the same split are replaced only once the new ones are complete, so an interrupted write never
    loses the previous output. An empty `rows` leaves no shard (datasets cannot read a Parquet file without row groups):
    the split is then absent from the card. Returns the paths.
    """
    folder = Path(out_dir) / (config_name or "data")
    tmp = folder / f".{split}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    schema = features.arrow_schema
    shards: list[Path] = []
    writer, shard_bytes = None, 0
    for table in _tables(rows, features, schema, rows_per_group):
        if writer is not None and shard_bytes + table.nbytes > max_shard_bytes:
            writer.close()
            writer = None
        if writer is None:
            shards.append(tmp / f"{len(shards):05d}.parquet")
            writer, shard_bytes = _parquet_writer(shards[-1], features, schema), 0
        writer.write_table(table, row_group_size=rows_per_group)
        shard_bytes += table.nbytes
    if writer is not None:
        writer.close()

    for old in folder.glob(f"{split}-*-of-*.parquet"):
        old.unlink()
    final = []
    for i, shard in enumerate(shards):
        final.append(folder / f"{split}-{i:05d}-of-{len(shards):05d}.parquet")
        shard.replace(final[-1])
    tmp.rmdir()
    return final


def write_shard(rows: Iterable[Mapping], features: datasets.Features, path: str | os.PathLike, *,
                rows_per_group: int = ROWS_PER_GROUP) -> int:
    """Write all `rows` into the single Parquet file `path`, atomically (a hidden temporary file renamed at the end),
    for builders that plan their own shards. Returns the number of rows; writes no file for zero rows."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    schema, writer, count = features.arrow_schema, None, 0
    try:
        for table in _tables(rows, features, schema, rows_per_group):
            if writer is None:
                writer = _parquet_writer(tmp, features, schema)
            writer.write_table(table, row_group_size=rows_per_group)
            count += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    if count:
        tmp.replace(path)
    return count


def _parquet_writer(path: Path, features: datasets.Features, schema: pa.Schema) -> pq.ParquetWriter:
    """Array2D columns: delta-encoded, uncompressed (ECG samples change slowly: 50 kB a record instead of 240 kB, and
    faster to write than zstd on plain ints, which is only 8 % smaller); the other columns zstd with dictionaries."""
    arrays = [f"{name}.list.element.list.element" for name, f in features.items() if isinstance(f, datasets.Array2D)]
    leaves = [schema.field(i).name for i in range(len(schema))]
    plain = [name for name in leaves if name not in {a.split(".")[0] for a in arrays}]
    return pq.ParquetWriter(
        path, schema,
        compression={column: "zstd" for column in plain} | {column: "none" for column in arrays},
        use_dictionary=plain, write_statistics=plain,
        column_encoding={column: "DELTA_BINARY_PACKED" for column in arrays} or None,
    )


def _tables(rows: Iterable[Mapping], features: datasets.Features, schema: pa.Schema, batch_size: int
            ) -> Iterable[pa.Table]:
    batch: list[Mapping] = []
    for row in rows:
        batch.append(row)
        if len(batch) == batch_size:
            yield _table(batch, features, schema)
            batch = []
    if batch:
        yield _table(batch, features, schema)


def _table(batch: list[Mapping], features: datasets.Features, schema: pa.Schema) -> pa.Table:
    columns = []
    for name, feature in features.items():
        values = [row[name] for row in batch]
        if isinstance(feature, datasets.Array2D):
            columns.append(_array2d(values, feature, schema.field(name).type, name))
        else:
            try:  # already in storage form (ids, strings, label indices): no per-value encoding
                column = pa.array(values, type=schema.field(name).type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):  # e.g. class names as labels
                column = pa.array([encode_nested_example(feature, v) for v in values], type=schema.field(name).type)
            _check_class_indices(name, feature, column)
            columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def _check_class_indices(name: str, feature, column: pa.Array) -> None:
    """Label indices must name a class: the fast path above skips datasets' per-value check."""
    label = feature.feature if isinstance(feature, datasets.List) else feature
    if not isinstance(label, datasets.ClassLabel):
        return
    values = column.flatten() if isinstance(feature, datasets.List) else column
    if len(values) and values.null_count < len(values):
        low, high = pc.min_max(values).values()
        if low.as_py() < -1 or high.as_py() >= label.num_classes:
            raise ValueError(f"column {name!r}: class index out of range [0, {label.num_classes}): "
                             f"{low.as_py()}..{high.as_py()}")


def _array2d(values: list, feature: datasets.Array2D, arrow_type: pa.DataType, name: str) -> pa.Array:
    """Stack (rows, cols) arrays into datasets' Array2D extension array without a Python-level copy per sample."""
    rows, cols = feature.shape
    stacked = np.stack([np.asarray(v) for v in values])
    if stacked.shape[1:] != (rows, cols):
        raise ValueError(f"column {name!r}: expected arrays of shape {(rows, cols)}, got {stacked.shape[1:]}")
    flat = pa.array(np.ascontiguousarray(stacked, dtype=feature.dtype).reshape(-1))
    inner = pa.ListArray.from_arrays(pa.array(np.arange(0, len(flat) + 1, cols, dtype=np.int32)), flat)
    outer = pa.ListArray.from_arrays(pa.array(np.arange(0, len(inner) + 1, rows, dtype=np.int32)), inner)
    return pa.ExtensionArray.from_storage(arrow_type, outer)


def _check_plain(value, where: str) -> None:
    """Raise TypeError naming the field when `value` holds anything but plain YAML types (a numpy string would make
    `yaml.safe_dump` fail after a whole build, with a message that names no field)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif value is not None and type(value) not in (str, int, float, bool):
        raise TypeError(f"{where}: {type(value).__module__}.{type(value).__name__} {value!r} is not a plain YAML "
                        "value; convert it (str(), int(), float()) where it is made")


def write_dataset_card(out_dir: str | os.PathLike, *, pretty_name: str, license: str, citation: str,
                       configs: Sequence[str] | None = None,
                       features: datasets.Features | Mapping[str, datasets.Features],
                       description: str, extra_sections: Mapping[str, str] | None = None) -> Path:
    """Write `out_dir/README.md`: YAML front matter (licence, `configs` with their data files, `dataset_info` with the
    features and split sizes) and a Markdown body (description, extra sections, citation).

    `configs`: config names (default: `["default"]`); config `default` lives in `data/`, any other in a folder of its
    name; the splits are the shards `write_split` left there. `features`: one `Features` for all configs, or one per
    config name. `license`: a Hub licence id (e.g. `odbl`, `cc-by-4.0`). `citation`: BibTeX. `extra_sections`: heading
    → Markdown.
    """
    out_dir = Path(out_dir)
    configs = list(configs or [DEFAULT_CONFIG])
    yaml_configs, infos = [], []
    for i, config in enumerate(configs):
        folder = out_dir / ("data" if config == DEFAULT_CONFIG else config)
        splits = _splits(folder)
        if not splits:
            raise ValueError(f"config {config!r}: no Parquet shards in {folder}; write the splits first")
        config_features = features[config] if isinstance(features, Mapping) and config in features else features
        if not isinstance(config_features, datasets.Features):
            raise ValueError(f"config {config!r}: no Features given")
        entry = {"config_name": config, "data_files": [
            {"split": split, "path": f"{folder.name}/{split}-*.parquet"} for split in splits]}
        if i == 0:
            entry["default"] = True
        yaml_configs.append(entry)
        infos.append({
            "config_name": config,
            "features": config_features._to_yaml_list(),
            "splits": [{"name": split, "num_bytes": sum(p.stat().st_size for p in paths),
                        "num_examples": sum(pq.ParquetFile(p).metadata.num_rows for p in paths)}
                       for split, paths in splits.items()],
        })
    front = {"pretty_name": pretty_name, "license": license, "configs": yaml_configs,
             "dataset_info": infos if len(infos) > 1 else infos[0]}
    _check_plain(front, "dataset card")
    body = [f"# {pretty_name}", "", description.strip(), ""]
    for heading, text in (extra_sections or {}).items():
        body += [f"## {heading}", "", text.strip(), ""]
    body += ["## Citation", "", "```bibtex", citation.strip(), "```", ""]
    card = "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000) + "---\n\n" + "\n".join(body)
    path = out_dir / "README.md"
    path.write_text(card, encoding="utf-8")
    return path


def _splits(folder: Path) -> dict[str, list[Path]]:
    splits: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*-*-of-*.parquet")):
        splits.setdefault(path.name.rsplit("-", 3)[0], []).append(path)
    return splits


def push_to_hub(out_dir: str | os.PathLike, repo_id: str, *, private: bool | None = None, token: str | None = None,
                revision: str | None = None) -> str:
    """Upload the dataset folder (Parquet shards, README.md, statistics, plots) to the Hub dataset repo `repo_id`.

    huggingface_hub's `upload_folder` with `hf_xet` commits large folders in batches and resumes an interrupted
    upload when called again (committed files are skipped, uploaded chunks deduplicated). Hidden files (caches,
    temporary shards) stay local. Returns the repo URL.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(out_dir), revision=revision,
                      ignore_patterns=[".*", "**/.*", "**/.*/**"],
                      commit_message="Upload dataset built with SuPreME's builders")
    return str(url)

