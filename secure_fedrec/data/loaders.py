"""Loaders for the common rating-file formats.

Supported formats (``format=`` argument, or detected with ``"auto"``):

========== ================================================ ===================
format     file                                             detected by
========== ================================================ ===================
ml-100k    GroupLens ``u.data``: ``user<TAB>item<TAB>rating  file name ``u.data``
           <TAB>timestamp``, no header
ml-1m      GroupLens ml-1m / ml-10m ``ratings.dat``:         suffix ``.dat`` or
           ``user::item::rating::timestamp``, no header     ``::`` in line 1
ml-latest  GroupLens ml-latest(-small) ``ratings.csv``:      header starting
           header ``userId,movieId,rating,timestamp``        ``userId,movieId``
atomic     RecBole atomic ``.inter``: tab separated, typed  suffix ``.inter``
           header ``user_id:token<TAB>item_id:token...``
csv        any CSV/TSV with a header naming its columns     anything else
========== ================================================ ===================

A directory resolves to the ratings file inside it (``ratings.csv``,
``ratings.dat``, ``u.data``, or a single ``*.inter`` file).

Parsing is vectorized with pandas; when pandas rejects the file, or the parsed
values fail validation (missing fields, NaN, ratings outside the scale), the
file is scanned again line by line so that the :class:`DataError` names the
file and the exact line. What happens after parsing (duplicates, implicit
feedback, filtering, re-indexing) is described in
:mod:`secure_fedrec.data.preprocess`.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .dataset import DataError, RatingData
from .preprocess import NoteBook, build_rating_data

if TYPE_CHECKING:  # imported where a file is parsed: a process that only generates data skips it
    import pandas as pd

__all__ = ["FORMATS", "detect_format", "load_ratings", "resolve_ratings_path"]

FORMATS = ("auto", "ml-100k", "ml-1m", "ml-latest", "atomic", "csv")

_RATINGS_FILE_IN_DIRECTORY = {
    "ml-100k": ("u.data",),
    "ml-1m": ("ratings.dat",),
    "ml-latest": ("ratings.csv",),
    "csv": ("ratings.csv", "ratings.tsv"),
    "atomic": (),
    "auto": ("ratings.csv", "ratings.dat", "u.data", "ratings.tsv"),
}
# utf-8-sig reads plain UTF-8 too and drops the byte-order mark some editors write.
_ENCODING = "utf-8-sig"
# GroupLens files hold 1-5 stars (ml-100k, ml-1m) or half stars 0.5-5 (ml-10m, ml-latest).
_GROUPLENS_SCALE = {"ml-100k": (1.0, 5.0), "ml-1m": (0.5, 5.0), "ml-latest": (0.5, 5.0)}

# Column names recognised in a generic header, compared case-insensitively.
_USER_NAMES = ("user_id", "userid", "user", "uid", "users", "customer_id", "reviewerid")
_ITEM_NAMES = ("item_id", "itemid", "item", "iid", "movie_id", "movieid", "movie", "product_id",
               "asin", "artist_id", "track_id", "book_id", "isbn")
_RATING_NAMES = ("rating", "ratings", "score", "stars", "rate", "overall")
# A column of these names holds implicit feedback (a weight or a count), not a rating.
_WEIGHT_NAMES = ("weight", "count", "plays", "playcount", "play_count", "clicks", "frequency",
                 "freq", "interactions", "value")
_TIMESTAMP_NAMES = ("timestamp", "time", "ts", "datetime", "date", "unixreviewtime")

# RecBole's default field names (USER_ID_FIELD, ITEM_ID_FIELD, RATING_FIELD, TIME_FIELD).
_ATOMIC_DEFAULTS = ("user_id", "item_id", "rating", "timestamp")


@dataclass(frozen=True)
class _Layout:
    """Where the columns are in one file; positions count fields split by ``sep``."""

    format: str
    sep: str
    has_header: bool
    n_fields: int
    user: int
    item: int
    rating: int | None
    timestamp: int | None
    integer_ids: bool  # GroupLens ids are integers; other formats may use any token
    column_names: tuple[str, ...]


def resolve_ratings_path(path: str | os.PathLike[str], format: str = "auto") -> Path:
    """The ratings file that ``path`` names: the file itself or the one inside a directory."""
    resolved = Path(path)
    if not resolved.exists():
        raise DataError(f"{resolved}: no such file or directory")
    if not resolved.is_dir():
        return resolved
    candidates = _RATINGS_FILE_IN_DIRECTORY[format]
    for name in candidates:
        if (resolved / name).is_file():
            return resolved / name
    if format in ("auto", "atomic"):
        inter_files = sorted(resolved.glob("*.inter"))
        if len(inter_files) == 1:
            return inter_files[0]
        if len(inter_files) > 1:
            names = ", ".join(p.name for p in inter_files)
            raise DataError(f"{resolved}: several .inter files ({names}); name one of them")
        candidates = (*candidates, "*.inter")
    raise DataError(
        f"{resolved}: directory holds no ratings file (looked for {', '.join(candidates)})"
    )


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of a ratings file, from its name and first line (see the module table)."""
    file = resolve_ratings_path(path)
    return _detect_format(file, _first_line(file))


def load_ratings(
    path: str | os.PathLike[str],
    format: str = "auto",
    *,
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    timestamp_col: str | None = None,
    sep: str | None = None,
    implicit: bool = False,
    binarize_threshold: float | None = None,
    keep_negatives: bool = False,
    min_user_ratings: int = 1,
    min_item_ratings: int = 1,
    rating_scale: tuple[float, float] | None = None,
    name: str | None = None,
) -> RatingData:
    """Load a rating file (or the ratings file in a directory) as :class:`RatingData`.

    Args:
        path: a ratings file or a dataset directory.
        format: one of :data:`FORMATS`; ``"auto"`` detects it.
        user_col, item_col, rating_col, timestamp_col: column names for the
            ``csv`` and ``atomic`` formats (atomic names without their
            ``:type``). Unset columns are guessed from common names; a file
            without a rating column loads as implicit feedback, as does one
            whose feedback column is a weight or count (``plays``, ``count``...).
        sep: field separator for ``csv``/``atomic``; guessed from line 1 when unset.
        implicit: treat every row as a positive interaction (value 1.0).
            Rows whose feedback value is <= 0 are dropped as non-interactions.
        binarize_threshold: implies ``implicit``: a row is positive when its
            feedback value is >= the threshold; other rows are dropped, or kept
            as negatives with value 0.0 when ``keep_negatives`` is set.
        min_user_ratings, min_item_ratings: filtering, iterated to a fixed point.
        rating_scale: (low, high) of valid ratings. Ratings outside it raise a
            DataError. Defaults: the GroupLens scales for GroupLens formats,
            the observed (min, max) otherwise (recorded in ``notes``).
        name: the dataset name; defaults to the file (or its directory) name.

    Raises:
        DataError: unknown format, unreadable or malformed file (naming the
            file and line), missing column, or no ratings left after filtering.
    """
    if format not in FORMATS:
        raise DataError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    _check_options(min_user_ratings, min_item_ratings, rating_scale, binarize_threshold)
    if keep_negatives and binarize_threshold is None:
        raise DataError("keep_negatives needs a binarize_threshold")
    file = resolve_ratings_path(path, format)
    notebook = NoteBook(str(file))
    first_line = _first_line(file)
    if format == "auto":
        format = _detect_format(file, first_line)
        notebook.record(f"format detected as {format}", level=logging.DEBUG)
    layout = _layout(file, format, first_line, sep, user_col, item_col, rating_col, timestamp_col)

    if layout.rating is None and not implicit:
        notebook.record("no rating column: loaded as implicit feedback")
        implicit = True
    elif (
        layout.rating is not None
        and not implicit
        and layout.column_names[layout.rating].lower() in _WEIGHT_NAMES
    ):
        notebook.record(
            f"column {layout.column_names[layout.rating]!r} holds weights or counts: "
            "loaded as implicit feedback"
        )
        implicit = True
    if binarize_threshold is not None:
        if layout.rating is None:
            raise DataError(f"{file}: binarize_threshold needs a rating or weight column")
        implicit = True

    validation_scale = rating_scale or _GROUPLENS_SCALE.get(layout.format)
    if implicit and rating_scale is None and layout.format not in _GROUPLENS_SCALE:
        validation_scale = None  # a weight or count has no scale to check against
    columns = _parse(file, layout, validation_scale)

    values = columns["rating"]
    if implicit:
        scale = (0.0, 1.0)
    elif rating_scale is not None:
        scale = (float(rating_scale[0]), float(rating_scale[1]))
    else:
        scale = _default_scale(layout.format, values, notebook)

    return build_rating_data(
        columns["user"],
        columns["item"],
        values,
        columns["timestamp"],
        implicit=implicit,
        binarize_threshold=binarize_threshold,
        keep_negatives=keep_negatives,
        min_user_ratings=min_user_ratings,
        min_item_ratings=min_item_ratings,
        rating_scale=scale,
        name=name or _default_name(file),
        notebook=notebook,
    )


def _check_options(
    min_user_ratings: int,
    min_item_ratings: int,
    rating_scale: tuple[float, float] | None,
    binarize_threshold: float | None,
) -> None:
    for label, value in (("min_user_ratings", min_user_ratings),
                         ("min_item_ratings", min_item_ratings)):
        if int(value) != value or value < 1:
            raise DataError(f"{label} must be a positive integer, got {value!r}")
    if rating_scale is not None:
        low, high = rating_scale
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise DataError(f"rating_scale must be finite (low, high) with low < high, "
                            f"got {rating_scale!r}")
    if binarize_threshold is not None and not math.isfinite(binarize_threshold):
        raise DataError(f"binarize_threshold must be finite, got {binarize_threshold!r}")


def _first_line(file: Path) -> str:
    try:
        with open(file, "rb") as handle:
            raw_line = handle.readline()
            rest_is_blank = not raw_line.strip() and not handle.read(1 << 16).strip()
    except OSError as exc:
        raise DataError(f"{file}: cannot be read ({exc.strerror})") from None
    if rest_is_blank:
        raise DataError(f"{file}: empty file (no ratings)")
    line = _decode(file, 1, raw_line)
    if not line.strip():
        raise DataError(f"{file}, line 1: blank; expected a header or a rating")
    return line.rstrip("\r\n")


def _decode(file: Path, line_number: int, raw_line: bytes) -> str:
    try:
        return raw_line.decode(_ENCODING if line_number == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{file}, line {line_number}: not valid UTF-8 ({exc.reason})") from None


def _decoded_lines(file: Path) -> Iterator[str]:
    # Decoded one line at a time (not by a buffered text reader) so that an encoding
    # error names its own line.
    with open(file, "rb") as handle:
        for line_number, raw_line in enumerate(handle, start=1):
            yield _decode(file, line_number, raw_line)


def _detect_format(file: Path, first_line: str) -> str:
    if file.name == "u.data":
        return "ml-100k"
    if file.suffix == ".inter":
        return "atomic"
    if file.suffix == ".dat" or "::" in first_line:
        return "ml-1m"
    if first_line.replace('"', "").startswith("userId,movieId"):
        return "ml-latest"
    return "csv"


def _layout(
    file: Path,
    format: str,
    first_line: str,
    sep: str | None,
    user_col: str | None,
    item_col: str | None,
    rating_col: str | None,
    timestamp_col: str | None,
) -> _Layout:
    if format in ("ml-100k", "ml-1m"):
        if any(col is not None for col in (user_col, item_col, rating_col, timestamp_col)):
            raise DataError(f"{file}: {format} files have no header; column names do not apply")
        fixed_sep = "\t" if format == "ml-100k" else "::"
        if sep is not None and sep != fixed_sep:
            raise DataError(f"{file}: {format} files are separated by {fixed_sep!r}, not {sep!r}")
        return _Layout(format, fixed_sep, False, 4, 0, 1, 2, 3, True,
                       ("user", "item", "rating", "timestamp"))

    if format == "ml-latest":
        sep = sep or ","
        header = _split_header(first_line, sep)
        if header[:2] != ["userId", "movieId"]:
            raise DataError(f"{file}, line 1: expected a header starting with userId{sep}movieId, "
                            f"found {first_line[:80]!r}")
        return _named_layout(file, format, sep, header, header, "userId", "movieId",
                             rating_col or ("rating" if "rating" in header else None),
                             timestamp_col or ("timestamp" if "timestamp" in header else None),
                             integer_ids=True)

    if format == "atomic":
        sep = sep or "\t"
        header = _split_header(first_line, sep)
        names = []
        for field in header:
            column, colon, _type = field.partition(":")
            if not colon or not column:
                raise DataError(f"{file}, line 1: atomic header field {field!r} is not "
                                "'name:type' (for example 'user_id:token')")
            names.append(column)
        user, item, rating, timestamp = _ATOMIC_DEFAULTS
        return _named_layout(file, format, sep, header, names,
                             user_col or user, item_col or item,
                             rating_col or (rating if rating in names else None),
                             timestamp_col or (timestamp if timestamp in names else None),
                             integer_ids=False)

    sep = sep or _guess_separator(first_line)
    header = _split_header(first_line, sep)
    return _named_layout(
        file, format, sep, header, header,
        user_col or _guess_column(header, _USER_NAMES),
        item_col or _guess_column(header, _ITEM_NAMES),
        rating_col or _guess_column(header, _RATING_NAMES) or _guess_column(header, _WEIGHT_NAMES),
        timestamp_col or _guess_column(header, _TIMESTAMP_NAMES),
        integer_ids=False,
    )


def _split_header(first_line: str, sep: str) -> list[str]:
    if len(sep) == 1:
        return [field.strip() for field in next(csv.reader([first_line], delimiter=sep))]
    return [field.strip() for field in first_line.split(sep)]


def _guess_separator(first_line: str) -> str:
    for candidate in ("\t", ",", ";", "|"):
        if candidate in first_line:
            return candidate
    return ","


def _guess_column(header: list[str], known_names: tuple[str, ...]) -> str | None:
    lowered = {name.lower(): name for name in header}
    for known in known_names:
        if known in lowered:
            return lowered[known]
    return None


def _named_layout(
    file: Path,
    format: str,
    sep: str,
    header: list[str],
    names: list[str],
    user_col: str | None,
    item_col: str | None,
    rating_col: str | None,
    timestamp_col: str | None,
    *,
    integer_ids: bool,
) -> _Layout:
    def position(role: str, column: str | None, required: bool) -> int | None:
        if column is None:
            if required:
                raise DataError(
                    f"{file}, line 1: no {role} column found among {names} (separator "
                    f"{sep!r}); name it with {role}_col= or check the separator"
                )
            return None
        if column not in names:
            raise DataError(f"{file}, line 1: missing column {column!r}; the header has "
                            f"{names} (separator {sep!r})")
        return names.index(column)

    user = position("user", user_col, True)
    item = position("item", item_col, True)
    assert user is not None and item is not None
    if user == item:
        raise DataError(f"{file}: the user and item columns are the same column {names[user]!r}")
    return _Layout(format, sep, True, len(header), user, item,
                   position("rating", rating_col, False),
                   position("timestamp", timestamp_col, False),
                   integer_ids, tuple(names))


def _parse(
    file: Path, layout: _Layout, scale: tuple[float, float] | None
) -> dict[str, np.ndarray | None]:
    """The user, item, rating and timestamp columns, or a DataError naming the bad line."""
    try:
        frame = _read_frame(file, layout)
        columns = _columns(frame, layout, scale)
    except _NeedsLineScan as exc:
        raise _error_at_bad_line(file, layout, scale, str(exc)) from None
    if len(columns["user"]) == 0:
        raise DataError(f"{file}: no ratings (the file holds a header only)")
    return columns


class _NeedsLineScan(Exception):
    """The vectorized parse found a problem; the line scan will say where."""


def _read_frame(file: Path, layout: _Layout) -> pd.DataFrame:
    import pandas as pd

    # '::' is not a single character, which pandas' fast C parser needs; splitting on ':'
    # gives the four fields at even positions and empty fields at odd ones.
    multi_char = layout.sep == "::"
    n_physical = 2 * layout.n_fields - 1 if multi_char else layout.n_fields
    stride = 2 if multi_char else 1
    # Between '::' there is nothing: read as float, anything there shows up as a number
    # (or fails to parse); either sends the file to the line scan.
    dtypes: dict[int, str] = {
        position: "float64" if multi_char and position % 2 else "str"
        for position in range(n_physical)
    }
    if layout.integer_ids:
        dtypes[layout.user * stride] = dtypes[layout.item * stride] = "int64"
    if layout.rating is not None:
        dtypes[layout.rating * stride] = "float64"
    if layout.integer_ids and layout.timestamp is not None:
        dtypes[layout.timestamp * stride] = "int64"
    try:
        with warnings.catch_warnings():
            # A row with too many fields only warns ("loss of data"); it must fail here.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(
                file,
                sep=":" if multi_char else layout.sep,
                header=None,
                skiprows=1 if layout.has_header else 0,
                names=list(range(n_physical)),
                index_col=False,
                dtype=dtypes,
                keep_default_na=False,
                na_values=[""],
                skip_blank_lines=True,
                encoding=_ENCODING,
                engine="c",
            )
    except (ValueError, TypeError, OverflowError, UnicodeDecodeError,
            pd.errors.ParserError, pd.errors.ParserWarning) as exc:
        raise _NeedsLineScan(f"{type(exc).__name__}: {exc}") from exc


def _columns(
    frame: pd.DataFrame, layout: _Layout, scale: tuple[float, float] | None
) -> dict[str, np.ndarray | None]:
    stride = 2 if layout.sep == "::" else 1
    if stride == 2 and frame[list(range(1, 2 * layout.n_fields - 1, 2))].notna().any(axis=None):
        raise _NeedsLineScan("a field between '::' separators")
    needed = [p for p in (layout.user, layout.item, layout.rating, layout.timestamp)
              if p is not None]
    if frame[[p * stride for p in needed]].isna().any(axis=None):
        raise _NeedsLineScan("missing field")

    columns: dict[str, np.ndarray | None] = {
        "user": _id_column(frame[layout.user * stride], layout.integer_ids),
        "item": _id_column(frame[layout.item * stride], layout.integer_ids),
        "rating": None,
        "timestamp": None,
    }
    if layout.rating is not None:
        ratings = frame[layout.rating * stride].to_numpy(dtype=np.float64)
        if not np.isfinite(ratings).all():
            raise _NeedsLineScan("non-finite rating")
        if scale is not None and ((ratings < scale[0]) | (ratings > scale[1])).any():
            raise _NeedsLineScan("rating outside the scale")
        columns["rating"] = ratings
    if layout.timestamp is not None:
        columns["timestamp"] = _timestamp_column(frame[layout.timestamp * stride])
    return columns


def _id_column(series: pd.Series, integer_ids: bool) -> np.ndarray:
    if integer_ids:
        return series.to_numpy(dtype=np.int64)
    strings = series.astype(str).str.strip()
    if (strings == "").any():
        raise _NeedsLineScan("empty id")
    # Integer-looking tokens become integers so that they sort numerically; a leading zero
    # ("007") keeps the column as text, where "007" and "7" stay different ids.
    if strings.str.fullmatch(r"-?(?:0|[1-9][0-9]{0,17})").all():
        return strings.astype(np.int64).to_numpy()
    return strings.to_numpy(dtype=str)


def _timestamp_column(series: pd.Series) -> np.ndarray:
    import pandas as pd

    if series.dtype.kind in "iu":
        return series.to_numpy(dtype=np.int64)
    try:  # integers first: through float64, seconds beyond 2**53 would lose precision
        return series.astype(np.int64).to_numpy()
    except (ValueError, TypeError, OverflowError):
        pass
    numeric = pd.to_numeric(series, errors="coerce")
    if numeric.notna().all():
        values = numeric.to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            raise _NeedsLineScan("non-finite timestamp")
        return np.rint(values).astype(np.int64)
    dates = pd.to_datetime(series, errors="coerce", utc=True, format="ISO8601")
    if dates.isna().any():
        raise _NeedsLineScan("timestamp is neither a number nor an ISO 8601 date")
    seconds = (dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.to_numpy(dtype=np.int64)


def _error_at_bad_line(
    file: Path, layout: _Layout, scale: tuple[float, float] | None, reason: str
) -> DataError:
    line_number = 0
    try:
        for line_number, fields in _rows(file, layout):
            if line_number == 1 and layout.has_header:
                continue
            problem = _row_problem(fields, layout, scale)
            if problem:
                return DataError(f"{file}, line {line_number}: {problem}")
    except DataError as exc:  # an encoding error, already naming its line
        return exc
    except csv.Error as exc:
        return DataError(f"{file}, line {line_number + 1}: {exc}")
    # The scan and pandas disagree on what is wrong; say what pandas saw.
    return DataError(f"{file}: cannot be parsed as {layout.format} ({reason})")


def _rows(file: Path, layout: _Layout) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank line; pandas skips blank lines too."""
    lines = _decoded_lines(file)
    if len(layout.sep) == 1:
        reader = csv.reader(lines, delimiter=layout.sep)
        for fields in reader:
            if fields:
                yield reader.line_num, fields
    else:
        for line_number, line in enumerate(lines, start=1):
            line = line.rstrip("\r\n")
            if line:
                yield line_number, line.split(layout.sep)


def _row_problem(fields: list[str], layout: _Layout, scale: tuple[float, float] | None) -> str:
    if len(fields) != layout.n_fields:
        return (f"expected {layout.n_fields} fields separated by {layout.sep!r}, "
                f"found {len(fields)}")
    for role, position in (("user", layout.user), ("item", layout.item)):
        token = fields[position].strip()
        if not token:
            return f"empty {role} id"
        if layout.integer_ids and not _is_integer(token):
            return f"{role} id {token!r} is not an integer"
    if layout.rating is not None:
        text = fields[layout.rating].strip()
        if not text:
            return "empty rating"
        try:
            value = float(text)
        except ValueError:
            return f"rating {text!r} is not a number"
        if not math.isfinite(value):
            return f"rating {text!r} is not a finite number"
        if scale is not None and not scale[0] <= value <= scale[1]:
            return f"rating {value:g} is outside the rating scale [{scale[0]:g}, {scale[1]:g}]"
    if layout.timestamp is not None:
        text = fields[layout.timestamp].strip()
        if not text:
            return "empty timestamp"
        if layout.integer_ids:
            if not _is_integer(text):
                return f"timestamp {text!r} is not an integer"
        elif not _is_number_or_date(text):
            return f"timestamp {text!r} is neither a number nor an ISO 8601 date"
    return ""


def _is_integer(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _is_number_or_date(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        pass
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _default_scale(
    format: str, values: np.ndarray | None, notebook: NoteBook
) -> tuple[float, float]:
    if format == "ml-100k" or format == "ml-latest":
        return _GROUPLENS_SCALE[format]
    assert values is not None  # explicit feedback always has a rating column
    if format == "ml-1m":
        # ml-1m holds whole stars 1-5, ml-10m half stars 0.5-5, in the same file format.
        whole_stars = bool((values >= 1).all() and (values == np.round(values)).all())
        return (1.0, 5.0) if whole_stars else (0.5, 5.0)
    scale = (float(values.min()), float(values.max()))
    notebook.record(f"rating scale taken from the data as [{scale[0]:g}, {scale[1]:g}]; "
                    "pass rating_scale= to set it")
    return scale


def _default_name(file: Path) -> str:
    if file.name in ("ratings.csv", "ratings.dat", "u.data", "ratings.tsv"):
        return file.parent.resolve().name or file.stem
    return file.stem
