"""Progress bars and console logging that keep redirected output readable.

Bars (tqdm) are drawn on stderr only when stderr is a terminal: redirected to a file or a pipe (``spkver demo
2> log``) there is no bar and no carriage-return redraw, and the per-epoch / per-stage summaries come through
``logging`` instead. :class:`LogHandler` writes log records above a live bar instead of through it.
"""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def stderr_is_terminal() -> bool:
    """True when ``sys.stderr`` is an interactive terminal (False for files, pipes and captured streams)."""
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def progress(iterable=None, **kwargs):
    """``tqdm(iterable, **kwargs)`` on stderr, disabled unless stderr is a terminal.

    ``disable=True`` turns the bar off in any case; a bar without an iterable (``total=N`` and ``.update()``)
    works as in tqdm.
    """
    from tqdm import tqdm

    kwargs["disable"] = bool(kwargs.get("disable", False)) or not stderr_is_terminal()
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


class LogHandler(logging.StreamHandler):
    """A stream handler that, on a terminal, prints through ``tqdm.write`` so a live bar is redrawn below the
    record rather than broken by it; elsewhere a plain :class:`logging.StreamHandler`. Without a ``stream`` it
    writes to whatever ``sys.stderr`` is when a record arrives (so it follows redirections)."""

    def __init__(self, stream=None):
        super().__init__(sys.stderr if stream is None else stream)
        self._follow_stderr = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow_stderr:
            self.stream = sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        if not (isatty and isatty()):
            super().emit(record)
            return
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # logging must never raise
            self.handleError(record)


def configure_logging(level: int = logging.INFO, stream=None, names: tuple[str, ...] = ("spkver", "scoring")
                      ) -> LogHandler:
    """Send the records of the package loggers ``names`` at ``level`` and above to ``stream`` (default:
    ``sys.stderr``, whatever it is at the time) as ``TIME LEVEL message`` lines. Calling it again replaces the
    handler it added before (one line per record however often a program calls it)."""
    handler = LogHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
    handler._spkver_console = True
    for name in names:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, "_spkver_console", False)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level)
    return handler
