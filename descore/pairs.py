"""Preference-pair files: reading, validation and writing per-pair results.

Three layouts are read, from CSV or JSONL (one JSON object per line, same keys as the CSV columns):

* ``videoalign`` (VideoAlign / VideoGen-RewardBench): ``path_A, path_B, prompt`` plus label columns (``VQ, MQ, TA,
  Overall``; for DeScore data also ``subject, dynamics, camera, environment, style``) holding ``A``, ``B`` or
  ``same``. Optional: ``A_model, B_model, fps_A, num_frames_A, fps_B, num_frames_B`` and ground-truth sub-scores
  ``gt_<dimension>_A`` / ``gt_<dimension>_B`` (0, 1, 2 or N/A).
* ``descore``: the ``videoalign`` layout with a chain of thought per video in ``CoT_A`` and ``CoT_B`` (required,
  non-empty).
* ``genai_bench`` (GenAI-Bench video): ``prompt, left_video_path, right_video_path, vote_type`` and optionally
  ``left_model, right_model``; ``vote_type`` in leftvote / rightvote / tievote / bothbad_vote is read as the
  ``Overall`` label, with tievote and bothbad_vote both ties. The left video is video A.

Loading checks the whole file before returning anything and raises one :class:`~descore.errors.DataError` listing
every problem found (missing columns, bad labels, missing videos with their line numbers, ...).
"""

from __future__ import annotations

import csv
import enum
import json
import logging
import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np

from descore.answer import DIMENSIONS, SubScore, parse_subscore
from descore.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


class PairLabel(enum.IntEnum):
    """Which video of a pair a judge preferred. The integer values are the label convention of the whole package."""

    B = -1
    TIE = 0
    A = 1


class PairFormat(str, enum.Enum):
    """Column layouts of preference-pair files."""

    VIDEOALIGN = "videoalign"
    DESCORE = "descore"
    GENAI_BENCH = "genai_bench"


#: Label columns recognised without being named: VideoAlign's dimensions and DeScore's judge dimensions.
KNOWN_LABEL_COLUMNS: tuple[str, ...] = ("VQ", "MQ", "TA", "Overall", *DIMENSIONS)

#: Label cell values (case-insensitive) and the label they mean.
LABEL_VALUES: dict[str, PairLabel] = {
    "a": PairLabel.A,
    "b": PairLabel.B,
    "same": PairLabel.TIE,
    "tie": PairLabel.TIE,
}

#: GenAI-Bench ``vote_type`` values; "both bad" counts as a tie, as the benchmark's own protocol does.
GENAI_VOTES: dict[str, PairLabel] = {
    "leftvote": PairLabel.A,
    "rightvote": PairLabel.B,
    "tievote": PairLabel.TIE,
    "bothbad_vote": PairLabel.TIE,
}

#: Columns the per-pair result writer fills in.
RESULT_COLUMNS: tuple[str, ...] = ("Reward_A", "Reward_B", "CoT_A", "CoT_B")

_REQUIRED: dict[PairFormat, tuple[str, ...]] = {
    PairFormat.VIDEOALIGN: ("path_A", "path_B", "prompt"),
    PairFormat.DESCORE: ("path_A", "path_B", "prompt", "CoT_A", "CoT_B"),
    PairFormat.GENAI_BENCH: ("prompt", "left_video_path", "right_video_path", "vote_type"),
}

#: Per format: (video A column, video B column, model A column, model B column).
_SIDES: dict[PairFormat, tuple[str, str, str, str]] = {
    PairFormat.VIDEOALIGN: ("path_A", "path_B", "A_model", "B_model"),
    PairFormat.DESCORE: ("path_A", "path_B", "A_model", "B_model"),
    PairFormat.GENAI_BENCH: ("left_video_path", "right_video_path", "left_model", "right_model"),
}

_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}

#: Problems of one kind listed in full before the rest are summarised in one line, so errors stay readable.
MAX_PROBLEMS_PER_KIND = 20


@dataclass(frozen=True)
class PreferencePair:
    """One judged pair of videos generated for the same prompt.

    ``labels`` maps each label column (dimension) to a :class:`PairLabel`. ``line`` is the line of the source file
    where the record starts (the CSV header is line 1). ``record`` is the original row, kept for writing results.
    """

    video_a: Path
    video_b: Path
    prompt: str
    labels: dict[str, PairLabel]
    line: int
    cot_a: str | None = None
    cot_b: str | None = None
    gt_subscores_a: dict[str, SubScore] | None = None
    gt_subscores_b: dict[str, SubScore] | None = None
    fps_a: float | None = None
    fps_b: float | None = None
    num_frames_a: int | None = None
    num_frames_b: int | None = None
    model_a: str | None = None
    model_b: str | None = None
    record: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


class PairDataset(Sequence[PreferencePair]):
    """The pairs of one file, with the helpers training and evaluation need."""

    def __init__(
        self,
        pairs: Iterable[PreferencePair],
        *,
        source: str | Path,
        format: PairFormat,
        dimensions: Sequence[str],
        columns: Sequence[str],
    ):
        self.pairs: list[PreferencePair] = list(pairs)
        self.source = Path(source)
        self.format = PairFormat(format)
        self.dimensions: tuple[str, ...] = tuple(dimensions)
        self.columns: tuple[str, ...] = tuple(columns)

    def __len__(self) -> int:
        return len(self.pairs)

    @overload
    def __getitem__(self, index: int) -> PreferencePair: ...

    @overload
    def __getitem__(self, index: slice) -> PairDataset: ...

    def __getitem__(self, index: int | slice) -> PreferencePair | PairDataset:
        if isinstance(index, slice):
            return self._with(self.pairs[index])
        return self.pairs[index]

    def __iter__(self) -> Iterator[PreferencePair]:
        return iter(self.pairs)

    def __repr__(self) -> str:
        return (
            f"PairDataset({len(self)} pairs from {str(self.source)!r}, format={self.format.value!r}, "
            f"dimensions={list(self.dimensions)})"
        )

    def _with(self, pairs: Iterable[PreferencePair]) -> PairDataset:
        return PairDataset(
            pairs, source=self.source, format=self.format, dimensions=self.dimensions, columns=self.columns
        )

    def _check_dimension(self, dimension: str) -> None:
        if dimension not in self.dimensions:
            raise ConfigError(
                f"{self.source}: no label column {dimension!r}; the file has labels {list(self.dimensions)}"
            )

    @property
    def has_cot(self) -> bool:
        """Whether every pair carries a chain of thought for both videos."""
        return bool(self.pairs) and all(p.cot_a is not None and p.cot_b is not None for p in self.pairs)

    @property
    def has_subscores(self) -> bool:
        """Whether every pair carries ground-truth sub-scores for both videos."""
        return bool(self.pairs) and all(
            p.gt_subscores_a is not None and p.gt_subscores_b is not None for p in self.pairs
        )

    def videos(self) -> list[Path]:
        """Distinct videos in order of first appearance, so each one is decoded and scored once."""
        return list(dict.fromkeys(v for p in self.pairs for v in (p.video_a, p.video_b)))

    def labels(self, dimension: str) -> list[PairLabel]:
        """The label of every pair for one dimension (label column)."""
        self._check_dimension(dimension)
        return [p.labels[dimension] for p in self.pairs]

    def drop_ties(self, dimension: str) -> PairDataset:
        """The pairs whose label for ``dimension`` is not a tie."""
        self._check_dimension(dimension)
        return self._with(p for p in self.pairs if p.labels[dimension] != PairLabel.TIE)

    def filter(self, predicate: Callable[[PreferencePair], bool]) -> PairDataset:
        """The pairs for which ``predicate`` is true, in the same order."""
        return self._with(p for p in self.pairs if predicate(p))


class _Problems:
    """Problems found while loading, grouped by kind so that a file with thousands of bad rows stays readable."""

    def __init__(self) -> None:
        self._by_kind: dict[str, list[str]] = defaultdict(list)

    def add(self, kind: str, message: str) -> None:
        self._by_kind[kind].append(message)

    def __len__(self) -> int:
        return sum(len(messages) for messages in self._by_kind.values())

    def raise_if_any(self, source: Path) -> None:
        if not self._by_kind:
            return
        listing: list[str] = []
        for kind, messages in self._by_kind.items():
            listing.extend(messages[:MAX_PROBLEMS_PER_KIND])
            if len(messages) > MAX_PROBLEMS_PER_KIND:
                listing.append(
                    f"... and {len(messages) - MAX_PROBLEMS_PER_KIND} more problem(s) of this kind: {kind}"
                )
        raise DataError(str(source), listing)


def _file_kind(path: Path) -> str:
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            str(path), [f"unsupported file type {path.suffix!r}; expected one of {sorted(_SUFFIXES)}"]
        )
    return kind


def _read_csv(path: Path, problems: _Problems) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    records: list[tuple[int, dict[str, Any]]] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header: list[str] | None = None
        start = 1
        for fields in reader:
            line, start = start, reader.line_num + 1
            if not fields or all(not f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip() for f in fields]
                duplicated = sorted({c for c in header if header.count(c) > 1})
                if duplicated:
                    problems.add("duplicated column", f"duplicated column(s) in the header: {duplicated}")
                continue
            if len(fields) != len(header):
                problems.add(
                    "wrong field count", f"line {line}: {len(fields)} field(s), the header has {len(header)}"
                )
                continue
            records.append((line, dict(zip(header, fields))))
    return header or [], records


def _read_jsonl(path: Path, problems: _Problems) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    records: list[tuple[int, dict[str, Any]]] = []
    columns: dict[str, None] = {}
    with path.open(encoding="utf-8-sig") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                problems.add(
                    "unreadable JSON", f"line {line}: not valid JSON ({err.msg} at column {err.colno})"
                )
                continue
            if not isinstance(record, dict):
                problems.add(
                    "unreadable JSON", f"line {line}: expected a JSON object, got {type(record).__name__}"
                )
                continue
            columns.update(dict.fromkeys(record))
            records.append((line, record))
    return list(columns), records


def detect_format(columns: Iterable[str]) -> PairFormat | None:
    """The layout a set of column names belongs to, or None when it matches none."""
    names = set(columns)
    if {"path_A", "path_B"} <= names:
        return PairFormat.DESCORE if {"CoT_A", "CoT_B"} <= names else PairFormat.VIDEOALIGN
    if {"left_video_path", "right_video_path"} <= names or "vote_type" in names:
        return PairFormat.GENAI_BENCH
    return None


def _text(value: Any) -> str:
    """A cell as text: CSV cells are strings already; JSON numbers and null are turned into their text."""
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else str(value)


def _number(value: Any, cast: type, where: str, problems: _Problems) -> Any:
    text = _text(value)
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0 or (cast is int and not number.is_integer()):
        kind = "a positive integer" if cast is int else "a positive number"
        problems.add("bad number", f"{where}: expected {kind}, got {text!r}")
        return None
    return cast(number)


def _subscores(record: Mapping[str, Any], side: str, where: str, problems: _Problems) -> dict[str, SubScore]:
    scores: dict[str, SubScore] = {}
    for dim in DIMENSIONS:
        column = f"gt_{dim}_{side}"
        raw = record.get(column)
        if isinstance(raw, str) and not raw.strip():
            problems.add("bad sub-score", f"{where}: {column} is empty (write N/A for not applicable)")
            continue
        try:
            scores[dim] = parse_subscore(raw)
        except (ValueError, TypeError):
            problems.add("bad sub-score", f"{where}: {column} = {raw!r}; expected 0, 1, 2 or N/A")
    return scores


def _resolve(text: str, base: Path) -> Path:
    path = Path(os.path.expanduser(text))
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


def _parse_record(
    line: int,
    record: Mapping[str, Any],
    fmt: PairFormat,
    label_columns: Sequence[str],
    has_subscores: bool,
    base: Path,
    problems: _Problems,
) -> PreferencePair | None:
    where = f"line {line}"
    before = len(problems)
    missing = [c for c in _REQUIRED[fmt] if c not in record]
    if missing:
        problems.add("missing key", f"{where}: missing key(s) {missing}")
        return None
    col_a, col_b, model_col_a, model_col_b = _SIDES[fmt]
    paths = {}
    for column in (col_a, col_b):
        paths[column] = _text(record[column])
        if not paths[column]:
            problems.add("empty video path", f"{where}: {column} is empty")
    prompt = _text(record["prompt"])
    if not prompt:
        problems.add("empty prompt", f"{where}: prompt is empty")

    labels: dict[str, PairLabel] = {}
    if fmt is PairFormat.GENAI_BENCH:
        vote = _text(record["vote_type"])
        if vote.lower() in GENAI_VOTES:
            labels["Overall"] = GENAI_VOTES[vote.lower()]
        else:
            problems.add(
                "unknown label", f"{where}: vote_type = {vote!r}; expected one of {list(GENAI_VOTES)}"
            )
    else:
        for column in label_columns:
            if column not in record:
                problems.add("missing key", f"{where}: missing label {column!r}")
                continue
            value = _text(record[column])
            if value.lower() in LABEL_VALUES:
                labels[column] = LABEL_VALUES[value.lower()]
            else:
                problems.add("unknown label", f"{where}: {column} = {value!r}; expected A, B or same")

    cots: dict[str, str | None] = {}
    for column in ("CoT_A", "CoT_B"):
        cots[column] = _text(record.get(column)) or None
        if fmt is PairFormat.DESCORE and cots[column] is None:
            problems.add("empty CoT", f"{where}: {column} is empty")

    gt_a = _subscores(record, "A", where, problems) if has_subscores else None
    gt_b = _subscores(record, "B", where, problems) if has_subscores else None
    fps = {s: _number(record.get(f"fps_{s}"), float, f"{where}: fps_{s}", problems) for s in "AB"}
    frames = {
        s: _number(record.get(f"num_frames_{s}"), int, f"{where}: num_frames_{s}", problems) for s in "AB"
    }

    if len(problems) > before:
        return None
    return PreferencePair(
        video_a=_resolve(paths[col_a], base),
        video_b=_resolve(paths[col_b], base),
        prompt=prompt,
        labels=labels,
        line=line,
        cot_a=cots["CoT_A"],
        cot_b=cots["CoT_B"],
        gt_subscores_a=gt_a,
        gt_subscores_b=gt_b,
        fps_a=fps["A"],
        fps_b=fps["B"],
        num_frames_a=frames["A"],
        num_frames_b=frames["B"],
        model_a=_text(record.get(model_col_a)) or None,
        model_b=_text(record.get(model_col_b)) or None,
        record=dict(record),
    )


def _check_videos(
    records: Sequence[tuple[int, Mapping[str, Any]]], fmt: PairFormat, base: Path, problems: _Problems
) -> None:
    """Every video cell of every record (parsed or not) must name an existing, non-empty file; one problem per video."""
    lines_by_video: dict[Path, list[int]] = defaultdict(list)
    for line, record in records:
        for column in _SIDES[fmt][:2]:
            text = _text(record.get(column))
            if text:
                lines_by_video[_resolve(text, base)].append(line)
    for video, lines in lines_by_video.items():
        shown = ", ".join(str(n) for n in sorted(set(lines)))
        if not video.is_file():
            problems.add("missing video", f"video not found: {video} (line {shown})")
        elif video.stat().st_size == 0:
            problems.add("empty video", f"video file is empty: {video} (line {shown})")


def _label_columns(
    fmt: PairFormat,
    columns: Sequence[str],
    label_columns: Sequence[str] | None,
    dimension: str | None,
    path: Path,
    problems: _Problems,
) -> list[str]:
    """The label columns to read: GenAI-Bench's vote, the named ones, or the known ones present; plus ``dimension``."""
    if fmt is PairFormat.GENAI_BENCH:
        if label_columns is not None and list(label_columns) != ["Overall"]:
            raise ConfigError(
                f"{path}: GenAI-Bench files have one label (Overall, from vote_type); got {label_columns}"
            )
        if dimension not in (None, "Overall"):
            problems.add(
                "missing column", f"no label {dimension!r}: GenAI-Bench files have one label, Overall"
            )
        return ["Overall"]
    dims = [c for c in KNOWN_LABEL_COLUMNS if c in columns] if label_columns is None else list(label_columns)
    if dimension is not None and dimension not in dims:
        dims.append(dimension)
    absent = [c for c in dims if c not in columns]
    if absent:
        problems.add("missing column", f"missing label column(s) {absent}; the file has {list(columns)}")
    elif not dims:
        problems.add(
            "missing column",
            f"no label column: expected one of {list(KNOWN_LABEL_COLUMNS)} (or name them with label_columns); "
            f"the file has {list(columns)}",
        )
    return dims


def load_pairs(
    path: str | Path,
    *,
    format: PairFormat | str | None = None,
    label_columns: Sequence[str] | None = None,
    video_root: str | Path | None = None,
    check_videos: bool = True,
    dimension: str | None = None,
    require_non_tie: bool = False,
) -> PairDataset:
    """Read and validate a preference-pair file (CSV or JSONL).

    ``format`` is detected from the columns when not given. ``label_columns`` defaults to the known label columns
    present in the file (GenAI-Bench files have a single ``Overall`` label). Relative video paths resolve against
    ``video_root``, or the file's folder when it is None. ``check_videos`` checks that every video file exists and is
    non-empty. ``dimension`` names the label that will be used (it must exist); with ``require_non_tie`` a file in
    which that label is a tie on every pair is rejected (nothing to train on). ``dimension`` may be left out when the
    file has a single label column.

    Raises :class:`~descore.errors.DataError` listing every problem found, before returning anything.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), ["file not found" if not path.exists() else "not a regular file"])
    kind = _file_kind(path)
    fmt = None if format is None else _parse_format(format)
    problems = _Problems()
    try:
        columns, records = (_read_csv if kind == "csv" else _read_jsonl)(path, problems)
    except UnicodeDecodeError as err:
        raise DataError(str(path), [f"not UTF-8 text ({err.reason} at byte {err.start})"]) from None
    except csv.Error as err:
        raise DataError(str(path), [f"malformed CSV: {err}"]) from None

    if not columns and not records:
        problems.add("empty", "the file is empty" if not problems else "no readable record")
        problems.raise_if_any(path)
    row_problems = len(
        problems
    )  # rows that could not be read: reported with the rest, after the header checks
    if fmt is None:
        fmt = detect_format(columns)
        if fmt is None:
            raise DataError(
                str(path),
                [
                    (
                        f"cannot tell the format from the columns {columns}: expected path_A and path_B "
                        "(VideoAlign / VideoGen-RewardBench, DeScore with CoT_A and CoT_B) or left_video_path, "
                        "right_video_path and vote_type (GenAI-Bench)"
                    )
                ],
            )
    missing = [c for c in _REQUIRED[fmt] if c not in columns]
    if missing:
        problems.add(
            "missing column", f"missing column(s) {missing} for format {fmt.value!r}; the file has {columns}"
        )

    dims = _label_columns(fmt, columns, label_columns, dimension, path, problems)
    if dimension is None and require_non_tie and dims:
        if len(dims) != 1:
            raise ConfigError(f"{path}: require_non_tie needs `dimension`: the file has labels {dims}")
        dimension = dims[0]

    gt_columns = [f"gt_{d}_{s}" for s in "AB" for d in DIMENSIONS]
    present_gt = [c for c in gt_columns if c in columns]
    if present_gt and len(present_gt) < len(gt_columns):
        absent_gt = [c for c in gt_columns if c not in columns]
        problems.add("missing column", f"ground-truth sub-score columns incomplete: missing {absent_gt}")
    if not records:
        problems.add("empty", "no pairs: the file has a header but no rows")
    if len(problems) > row_problems:
        problems.raise_if_any(path)

    base = Path(os.path.abspath(video_root if video_root is not None else path.parent))
    parsed = [_parse_record(n, r, fmt, dims, bool(present_gt), base, problems) for n, r in records]
    pairs = [p for p in parsed if p is not None]
    if check_videos:
        _check_videos(records, fmt, base, problems)
    if require_non_tie and not problems and all(p.labels[dimension] == PairLabel.TIE for p in pairs):
        problems.add(
            "all ties", f"every one of the {len(pairs)} pairs is a tie on {dimension!r}: nothing to train on"
        )
    problems.raise_if_any(path)

    dataset = PairDataset(pairs, source=path, format=fmt, dimensions=dims, columns=columns)
    logger.info(
        "loaded %d pairs (%s, labels %s, %d distinct videos) from %s",
        len(dataset),
        fmt.value,
        dims,
        len(dataset.videos()),
        path,
    )
    return dataset


def _parse_format(value: PairFormat | str) -> PairFormat:
    try:
        return PairFormat(value)
    except ValueError:
        raise ConfigError(
            f"unknown pair-file format {value!r}; expected one of {[f.value for f in PairFormat]}"
        ) from None


def _ordered_columns(pairs: Sequence[PreferencePair], added: Iterable[str]) -> list[str]:
    columns: dict[str, None] = {}
    for pair in pairs:
        columns.update(dict.fromkeys(pair.record))
    columns.update(dict.fromkeys(added))
    return list(columns)


def _relocated_paths(pair: PreferencePair, out_dir: Path) -> dict[str, str]:
    """Video path cells rewritten so that relative paths still resolve from the result file's folder."""
    fmt = detect_format(pair.record)
    if fmt is None:
        return {}
    cells = {}
    for column, video in zip(_SIDES[fmt][:2], (pair.video_a, pair.video_b)):
        original = _text(pair.record.get(column))
        if original and not Path(os.path.expanduser(original)).is_absolute():
            cells[column] = Path(os.path.relpath(video, out_dir)).as_posix()
    return cells


def write_pair_results(
    path: str | Path,
    pairs: Sequence[PreferencePair],
    rewards_a: Sequence[float] | np.ndarray,
    rewards_b: Sequence[float] | np.ndarray,
    *,
    cots_a: Sequence[str | None] | None = None,
    cots_b: Sequence[str | None] | None = None,
    extra_columns: Mapping[str, Sequence[Any]] | None = None,
) -> Path:
    """Write each pair's original row with ``Reward_A``, ``Reward_B`` and (when given) ``CoT_A``, ``CoT_B`` set.

    The file type follows the suffix (``.csv`` or ``.jsonl``). Columns the rows already have (e.g. ``CoT_A``) are
    overwritten in place; new ones are appended. Relative video paths are rewritten relative to the result file's
    folder, so the result file loads with :func:`load_pairs` wherever it is written. ``extra_columns`` adds more per-pair columns. The file is written
    to a temporary name first and moved into place, so a crash never leaves a half-written result file.
    """
    path = Path(path)
    kind = _file_kind(path)
    columns: dict[str, Sequence[Any]] = {"Reward_A": rewards_a, "Reward_B": rewards_b}
    if cots_a is not None:
        columns["CoT_A"] = cots_a
    if cots_b is not None:
        columns["CoT_B"] = cots_b
    columns.update(extra_columns or {})
    wrong = [
        f"{name} has {len(values)} value(s)" for name, values in columns.items() if len(values) != len(pairs)
    ]
    if wrong:
        raise DataError(str(path), [f"{w}, expected one per pair ({len(pairs)})" for w in wrong])

    path.parent.mkdir(parents=True, exist_ok=True)
    out_dir = Path(os.path.abspath(path.parent))
    rows = []
    for i, pair in enumerate(pairs):
        row = dict(pair.record)
        row.update(_relocated_paths(pair, out_dir))
        for name, values in columns.items():
            value = values[i]
            value = value.item() if hasattr(value, "item") else value
            row[name] = float(value) if name in ("Reward_A", "Reward_B") else value
        rows.append(row)

    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", newline="", encoding="utf-8") as handle:
            if kind == "csv":
                writer = csv.DictWriter(handle, fieldnames=_ordered_columns(pairs, columns), restval="")
                writer.writeheader()
                writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
            else:
                for row in rows:
                    handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    logger.info("wrote %d pair results to %s", len(rows), path)
    return path
