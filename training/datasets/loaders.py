"""File loaders for the public layouts in ``shared/data``. Loaders only read; they never write.

* RecBole atomic: ``<name>.inter`` (``user_id:token item_id:token [rating:float] [timestamp:float]``)
  plus optional ``<name>.item`` (title / year / genres → item text).
* UniSRec / LLMRank: ``<name>.{train,valid,test}.inter`` with ``user_id item_id_list item_id`` rows;
  each user's full sequence is rebuilt by chaining the rows (``history + [target]``).
* SASRec / S3-Rec text: ``user item item ...`` per line (S3-Rec) or ``user item`` per line (SASRec).
"""
from __future__ import annotations

import math
from pathlib import Path

from training.datasets.base import (
    DataFormatError,
    InteractionData,
    ItemVocabulary,
    build_data,
    parse_int,
    read_lines,
)

# Column names (without the ``:type`` suffix) that make up item text, in priority order.
_TITLE_COLS = ("movie_title", "title", "name", "item_name")
_YEAR_COLS = ("release_year", "year")
_CATEGORY_COLS = ("class", "genre", "genres", "categories", "category")
UNISREC_SPLITS = ("train", "valid", "test")


def _read_atomic(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[str], list[tuple[int, list[str]]]]:
    """Read a RecBole atomic (tab-separated, typed header) file.

    Returns ``(names, types, rows)`` where rows are ``(line number, fields)``; validates the header,
    the required columns, the field count of every row and every ``:float`` field.
    """
    lines = read_lines(path)
    header = next(lines, None)
    if header is None or not header[1].strip():
        raise DataFormatError(path, 0 if header is None else 1, "file is empty (expected a typed header row)")
    names, types = [], []
    for col in header[1].split("\t"):
        name, sep, typ = col.partition(":")
        if not sep or typ not in ("token", "token_seq", "float", "float_seq"):
            raise DataFormatError(path, 1, f"header field {col!r} is not 'name:type' with a RecBole type")
        names.append(name)
        types.append(typ)
    missing = [c for c in required if c not in names]
    if missing:
        raise DataFormatError(path, 1, f"missing column(s) {', '.join(missing)} (header has {', '.join(names)})")
    float_cols = [i for i, t in enumerate(types) if t == "float"]
    rows: list[tuple[int, list[str]]] = []
    for no, line in lines:
        if not line.strip():
            continue  # blank lines (e.g. a trailing one) carry no data
        fields = line.split("\t")
        if len(fields) != len(names):
            raise DataFormatError(path, no, f"{len(fields)} tab-separated fields, header has {len(names)}")
        for i in float_cols:
            try:
                v = float(fields[i])
            except ValueError:
                raise DataFormatError(path, no, f"{names[i]} {fields[i]!r} is not a number") from None
            if not math.isfinite(v):
                raise DataFormatError(path, no, f"{names[i]} {fields[i]!r} is not finite")
        rows.append((no, fields))
    if not rows:
        raise DataFormatError(path, 0, "file has a header but no data rows")
    return names, types, rows


def read_item_texts(path: Path) -> dict[str, str]:
    """Item text per raw item id from a RecBole ``.item`` file: ``"Title (Year) | Genre, Genre"``."""
    return read_item_file(path)[0]


def read_item_file(path: Path) -> tuple[dict[str, str], dict[str, tuple[str, ...]] | None]:
    """One pass over a RecBole ``.item`` file → ``(text per raw item id, category tags per raw item id)``.

    Tags are the whitespace-separated tokens of the category column (``class`` = MovieLens genres, or
    ``genre(s)``/``categories``/``category``); None when the file has no such column.
    """
    names, types, rows = _read_atomic(path, ("item_id",))
    pick = lambda cands: next((names.index(c) for c in cands if c in names), None)  # noqa: E731
    title, year, cats = pick(_TITLE_COLS), pick(_YEAR_COLS), pick(_CATEGORY_COLS)
    if title is None:  # unknown schema: use every non-id text column
        extra = [i for i, (n, t) in enumerate(zip(names, types)) if n != "item_id" and t.startswith("token")]
    iid = names.index("item_id")
    texts: dict[str, str] = {}
    tags: dict[str, tuple[str, ...]] = {}
    for no, f in rows:
        if f[iid] in texts:
            raise DataFormatError(path, no, f"duplicate item_id {f[iid]!r}")
        if title is None:
            text = " ".join(f[i].strip() for i in extra if f[i].strip())
        else:
            text = f[title].strip()
            if year is not None and f[year].strip():
                text += f" ({f[year].strip()})"
            if cats is not None and f[cats].strip():
                text += " | " + ", ".join(f[cats].split())
        texts[f[iid]] = text
        if cats is not None:
            tags[f[iid]] = tuple(f[cats].split())
    return texts, (tags if cats is not None else None)


def load_recbole(inter: Path, item: Path | None = None) -> InteractionData:
    """Load a RecBole atomic ``.inter`` file (and ``.item`` text when present) — e.g. ml-100k."""
    names, _, rows = _read_atomic(inter, ("user_id", "item_id"))
    ui, ii = names.index("user_id"), names.index("item_id")
    ti = names.index("timestamp") if "timestamp" in names else None
    index = ItemVocabulary()
    users: dict[str, int] = {}
    codes: list[list[int]] = []
    times: list[list[float]] = []
    for _, f in rows:
        u = users.setdefault(f[ui], len(users))
        if u == len(codes):
            codes.append([])
            times.append([])
        codes[u].append(index.add(f[ii]))
        if ti is not None:
            times[u].append(float(f[ti]))
    texts, tags = read_item_file(item) if item is not None and item.exists() else (None, None)
    # Without a timestamp column, file order is time order and timestamps become the order index.
    return build_data(inter.name.removesuffix(".inter"), list(users), codes,
                      times if ti is not None else None, index, texts, tags)


def unisrec_files(stem_path: Path) -> list[Path]:
    """Existing ``<stem>.{train,valid,test}.inter`` files, in chronological split order."""
    return [p for s in UNISREC_SPLITS if (p := stem_path.with_name(f"{stem_path.name}.{s}.inter")).exists()]


def load_unisrec(stem_path: Path) -> InteractionData:
    """Load the UniSRec/LLMRank layout ``<stem>.{train,valid,test}.inter`` (+ ``<stem>.item`` titles).

    Each row is ``history + [target]`` of one user. A user's rows may come in any order inside a file: they are
    first put in the order the format states — split order (train, valid, test), then the row's ``timestamp``
    column when the files have one, else its history length (an untruncated history's length *is* the target's
    position), file order breaking ties — and then chained: the first row gives ``history + [target]``; each
    later row's history must be a suffix of what has been rebuilt so far (histories are truncated from the front)
    and its target is appended. Rows whose truncated histories tie on length are chained in whichever order
    continues the sequence (file order first). A row that continues nothing raises DataFormatError.
    """
    files = unisrec_files(stem_path)
    if not files:
        raise DataFormatError(stem_path, 0, "no <name>.{train,valid,test}.inter files found")
    users: dict[str, int] = {}
    # per user: (sort key, path, line, history, target)
    rows_of: list[list[tuple[tuple, Path, int, list[str], str]]] = []
    for split_no, path in enumerate(files):
        names, _, rows = _read_atomic(path, ("user_id", "item_id_list", "item_id"))
        ui, li, ti = names.index("user_id"), names.index("item_id_list"), names.index("item_id")
        tsi = names.index("timestamp") if "timestamp" in names else None
        for no, f in rows:
            hist, target = f[li].split(), f[ti].strip()
            if not target or len(target.split()) != 1:
                raise DataFormatError(path, no, f"item_id {f[ti]!r} must be exactly one token")
            u = users.setdefault(f[ui], len(rows_of))
            if u == len(rows_of):
                rows_of.append([])
            order = float(f[tsi]) if tsi is not None else len(hist)
            rows_of[u].append(((split_no, order, no), path, no, hist, target))
    seqs = [_chain_unisrec_rows(raw, rows) for raw, rows in zip(users, rows_of)]
    index = ItemVocabulary()
    codes = [[index.add(i) for i in s] for s in seqs]
    item_file = stem_path.with_name(f"{stem_path.name}.item")
    texts, tags = read_item_file(item_file) if item_file.exists() else (None, None)
    return build_data(stem_path.name, list(users), codes, None, index, texts, tags)


def _continues(seq: list[str], hist: list[str]) -> bool:
    """Whether a row with history ``hist`` follows the sequence ``seq`` rebuilt so far."""
    if len(hist) > len(seq):  # a less truncated row reaching further back than anything so far
        return hist[len(hist) - len(seq):] == seq
    return not hist or seq[-len(hist):] == hist


def _chain_unisrec_rows(raw_user: str, rows: list[tuple[tuple, Path, int, list[str], str]]) -> list[str]:
    """One user's rows (any order) → the user's full sequence; see :func:`load_unisrec`."""
    pending = sorted(rows, key=lambda r: r[0])
    seq = list(pending[0][3]) + [pending[0][4]]
    pending = pending[1:]
    while pending:
        # In-order files take the first pending row every time (linear); only out-of-order ties scan further.
        j = next((j for j, r in enumerate(pending) if _continues(seq, r[3])), None)
        if j is None:
            _, path, no, _, _ = pending[0]
            raise DataFormatError(
                path, no, f"history of user {raw_user!r} does not continue the sequence from earlier rows"
            )
        _, _, _, hist, target = pending.pop(j)
        if len(hist) > len(seq):
            seq[:] = hist
        seq.append(target)  # every row adds exactly one new (later) item
    return seq


def load_text(path: Path) -> InteractionData:
    """Load a whitespace-separated integer file: S3-Rec ``user i1 i2 ...`` or SASRec ``user item``.

    If every line has exactly two tokens it is read as one interaction per line (SASRec; a user's
    lines need not be contiguous, file order is time order). Otherwise each line is one user's full
    chronological sequence (S3-Rec) and a user may appear only once.
    """
    parsed: list[tuple[int, list[int]]] = []
    for no, line in read_lines(path):
        toks = line.split()
        if not toks:
            continue
        parsed.append((no, [parse_int(t, path, no, "user id" if j == 0 else "item id") for j, t in enumerate(toks)]))
    if not parsed:
        raise DataFormatError(path, 0, "file is empty")
    pairs = all(len(t) == 2 for _, t in parsed)
    index = ItemVocabulary()
    users: dict[str, int] = {}
    first_line: dict[str, int] = {}
    codes: list[list[int]] = []
    for no, toks in parsed:
        if len(toks) < 2:
            raise DataFormatError(path, no, "line has a user id but no items")
        raw_user = str(toks[0])
        u = users.get(raw_user)
        if u is None:
            u = users[raw_user] = len(codes)
            first_line[raw_user] = no
            codes.append([])
        elif not pairs:
            raise DataFormatError(path, no, f"user {raw_user} already has a sequence at line {first_line[raw_user]}")
        codes[u].extend(index.add(str(i)) for i in toks[1:])
    return build_data(path.stem, list(users), codes, None, index, None)
