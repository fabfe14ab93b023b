"""Progress bars for long work: on stderr, so that results on stdout stay clean."""

from __future__ import annotations

import sys
from typing import Never

from tqdm import tqdm

__all__ = ["ProgressBar", "progress_bar"]


def progress_bar(description: str, unit: str = "event", total: int | None = None) -> tqdm[Never]:
    """A bar on stderr, shown only where stderr is a terminal."""
    return tqdm(desc=description, unit=unit, total=total, disable=None, file=sys.stderr)


class ProgressBar:
    """A progress bar whose total grows as a rebuild finds more to read."""

    def __init__(self, bar: tqdm[Never]) -> None:
        self._bar = bar

    def expect(self, records: int) -> None:
        """There are this many more to read."""
        self._bar.total = (self._bar.total or 0) + records
        self._bar.refresh()

    def advance(self, records: int) -> object:
        """This many more were read."""
        return self._bar.update(records)
