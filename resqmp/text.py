"""Text from data, as resqmp shows it on the user's terminal.

Task names, wrapper names and paths come from the batch (or a model's titles, or a task's error):
a control character in one (an escape sequence, a carriage return, a line break, a bidirectional
override) would act on the terminal: retitle it, clear it, overwrite or forge a line of resqmp's.
Every line resqmp prints for the user goes through printable(); the JSON report, the journal and
the batch files keep the exact text.
"""
from __future__ import annotations


def printable(text) -> str:
    """`text` with each character that is not printable (str.isprintable: controls, format
    characters such as U+202E, separators other than the space) escaped as Python's repr escapes it
    (\\x1b, \\n, \\r, \\u202e); everything else, accented letters too, as it is."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
