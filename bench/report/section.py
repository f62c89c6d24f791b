"""``Section``: one part of a report, the records it needs and how it renders; a kind of run is a list of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.report.analyse import Analysis


def always(_: Analysis) -> bool:
    return True


@dataclass(frozen=True)
class Section:
    """``needs`` says whether the analysis holds what ``render`` shows; a section without it is left out of the
    report rather than printed empty. ``render`` may still return [] where its data turns out to say nothing."""

    name: str
    render: Callable[[Analysis], list[str]]
    needs: Callable[[Analysis], bool] = always

    def lines(self, a: Analysis) -> list[str]:
        return self.render(a) if self.needs(a) else []
