"""A report's text as tests read it: each wrapped paragraph, list item or quoted line joined back into one line.

``bench.report.format.wrap_prose`` wraps prose at PROSE_WIDTH; a test that looks for a sentence must not depend on
where a line broke. Tables, headings, images and code blocks are never wrapped, so they come back as they are.
"""

from bench.report.format import LIST_CONTINUATION, QUOTE_CONTINUATION

UNWRAPPED = ("|", "#", "![", "```")


def _prose(line: str) -> bool:
    return bool(line.strip()) and not line.startswith(UNWRAPPED)


def unwrap(markdown: str) -> str:
    out: list[str] = []
    in_code = False
    for line in markdown.split("\n"):
        if line.startswith("```"):
            in_code = not in_code
            out.append(line)
            continue
        prev = out[-1] if out and not in_code else None
        if prev is not None and _prose(prev) and _continues(prev, line):
            cut = len(QUOTE_CONTINUATION) if line.startswith(QUOTE_CONTINUATION) else len(LIST_CONTINUATION)
            out[-1] = f"{prev} {line[cut:] if line.startswith((QUOTE_CONTINUATION, LIST_CONTINUATION)) else line}"
        else:
            out.append(line)
    return "\n".join(out)


def _continues(prev: str, line: str) -> bool:
    if line.startswith(QUOTE_CONTINUATION):
        return prev.startswith(">")
    if line.startswith(LIST_CONTINUATION) and line.strip():
        return prev.startswith("- ")
    plain = _prose(line) and not line.startswith(("- ", ">", " "))
    return plain and not prev.startswith(("- ", ">"))


def section(text: str, heading: str) -> str:
    """The part of ``text`` from ``heading`` to the next second-level heading (or the end)."""
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end >= 0 else len(text)]
