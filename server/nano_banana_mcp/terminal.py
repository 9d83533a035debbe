"""Text for a person's terminal: no control character from an API, a file or a prompt ever reaches it.

A task's error, a prompt or a URL comes from the API and may hold ESC sequences (which retitle the window, clear
the screen, move the cursor or hide what follows) or line breaks (which forge a line of their own). ``printable``
is the one place that takes them out; the CLI passes every table row and message through it, and
``PrintableFormatter`` does it to every log line.
"""

from __future__ import annotations

import logging
import re

__all__ = ["PrintableFormatter", "printable"]

_BREAKS = re.compile("[\n\r\v\f\x85\u2028\u2029]")
"""Line and page breaks: each becomes a space, so the words on both sides stay apart but on one line."""
_CONTROLS = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")
"""The C0 controls (ESC, BEL, backspace, NUL, …) and DEL and the C1 controls (CSI, OSC, …); tab is harmless."""


def printable(text: str) -> str:
    """``text`` on one line with no control character: breaks become spaces, every other C0 or C1 control and DEL
    is dropped. A tab stays."""
    return _CONTROLS.sub("", _BREAKS.sub(" ", text))


class PrintableFormatter(logging.Formatter):
    """A log formatter whose lines carry no control character: each record is one line (``printable``), and a
    traceback keeps its own line breaks, each of its lines made printable."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        return "\n".join(printable(line) for line in super().formatException(ei).splitlines())

    def formatStack(self, stack_info: str) -> str:
        return "\n".join(printable(line) for line in super().formatStack(stack_info).splitlines())
