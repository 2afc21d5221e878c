"""Basics of the back-end's file modules: the error type, atomic writes, and the one reader of text tables.

`scoring.io` and `scoring.embio` both build on this module (so neither imports the other back), and spkver
uses the same helpers through `scoring.io`, which re-exports every public name here. Standard library only.

Tables are Kaldi-style text files, one record per line, fields separated by whitespace: ``key value ...``
(``utt2spk``, ``spk2utt``, ``wav.scp``, ``segments`` ...). Every error names the file and the line at fault.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterable, Iterator


class ScoringInputError(ValueError):
    """Bad input to the scoring back-end; the message names the file and line, or the id, at fault."""


# ---------------------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def atomic_write(path) -> Iterator[str]:
    """Yield a temporary path next to `path`; on success it replaces `path` (os.replace), else is removed.

    The folder is created if needed; the file gets the usual permissions (0666 less the umask).

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_write(out) as tmp:
    ...     _ = open(tmp, "w").write("ok")
    >>> out.read_text()
    'ok'
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path, text: str | Iterable[str]) -> None:
    """Write `text` (a string, or strings written one after the other) as UTF-8 with ``\\n`` line ends,
    atomically (`atomic_write`)."""
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        if isinstance(text, str):
            fh.write(text)
        else:
            fh.writelines(text)


# ---------------------------------------------------------------------------------------------- reading
def read_fields(path, skip_blank: bool = True,
                error: type[Exception] = ScoringInputError) -> Iterator[tuple[int, str, list[str]]]:
    """Yield (line number from 1, line, fields) for the lines of a UTF-8 text file.

    Blank lines are skipped, or with ``skip_blank=False`` rejected. Errors (file not readable, not UTF-8, a
    blank line) raise `error` naming the file (and line).
    """
    path = os.fspath(path)
    try:
        fh = open(path, encoding="utf-8")
    except OSError as err:
        raise error(f"{path}: cannot open ({err.strerror})") from None
    with fh:
        try:
            for number, line in enumerate(fh, start=1):
                fields = line.split()
                if fields:
                    yield number, line, fields
                elif not skip_blank:
                    raise error(f"{path}:{number}: blank line")
        except UnicodeDecodeError as err:
            raise error(f"{path}: not UTF-8 text ({err})") from None


def table_rows(path, min_fields: int = 2, max_fields: int | None = 2, rest_as_value: bool = False,
               check_sorted: bool = False, skip_blank: bool = True,
               error: type[Exception] = ScoringInputError) -> Iterator[tuple[int, str, str | list[str]]]:
    """Yield (line number, key, value) for the records of a ``key value ...`` table, in file order.

    Args:
        min_fields / max_fields: allowed number of fields per line, key included (``max_fields=None``: no
            maximum).
        rest_as_value: the value is the rest of the line after the key, stripped, however many fields it has
            (``wav.scp``: a path or a command); otherwise it is the list of the remaining fields, or one string
            when ``max_fields == 2``.
        check_sorted: reject keys out of C-locale (byte) order, as Kaldi's tables are sorted.
        skip_blank: skip blank lines (else reject them).
        error: the exception type raised.
    Raises:
        `error` naming ``path:line`` for a wrong number of fields, a repeated key, a key out of order, a blank
        line (unless skipped), or a file that cannot be read.
    """
    path = os.fspath(path)
    max_fields = None if rest_as_value else max_fields
    first_line: dict[str, int] = {}
    previous = None
    for number, line, fields in read_fields(path, skip_blank, error):
        if len(fields) < min_fields or (max_fields is not None and len(fields) > max_fields):
            want = (f"{min_fields}" if max_fields == min_fields else f"at least {min_fields}" if max_fields is None
                    else f"{min_fields} to {max_fields}")
            raise error(f"{path}:{number}: expected {want} fields, got {len(fields)}: {line.strip()!r}")
        key = fields[0]
        if key in first_line:
            raise error(f"{path}:{number}: duplicate id {key!r} (first on line {first_line[key]})")
        if check_sorted and previous is not None and key.encode() < previous.encode():
            raise error(f"{path}:{number}: id {key!r} is out of order after {previous!r} "
                        "(Kaldi files are sorted in C-locale order: LC_ALL=C sort)")
        first_line[key] = number
        previous = key
        if rest_as_value:
            yield number, key, line.strip()[len(key):].strip()
        else:
            yield number, key, fields[1] if max_fields == 2 else fields[1:]


def read_table(path, min_fields: int = 2, max_fields: int | None = 2, rest_as_value: bool = False,
               check_sorted: bool = False, skip_blank: bool = True,
               error: type[Exception] = ScoringInputError) -> dict[str, str | list[str]]:
    """``{key: value}`` of a ``key value ...`` table in file order; arguments and errors as `table_rows`."""
    return {key: value for _, key, value in table_rows(path, min_fields, max_fields, rest_as_value,
                                                       check_sorted, skip_blank, error)}


def check_ids(ids, what: str) -> None:
    """Raise ScoringInputError (naming `what`, e.g. the file) unless every id in ids (n,) str is a non-empty
    token without whitespace (a Kaldi table key)."""
    for value in ids:
        if not value or len(value.split()) != 1:
            raise ScoringInputError(f"{what}: id {value!r} is empty or contains whitespace")


def read_npz(path, what: str) -> dict:
    """Every array of the ``.npz`` at ``path`` as ``{name: array}``, read without pickles (a file holding
    objects is refused); ``ScoringInputError`` naming the file and ``what`` it should hold when unreadable."""
    import numpy as np

    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise ScoringInputError(f"{path}: cannot read {what} ({err})") from None

