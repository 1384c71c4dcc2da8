"""The campaign's progress bar (rich): attacks done, successes, queries per second, ETA."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def make_progress(console: Console | None = None) -> Progress:
    """Return a (not yet started) progress bar for a campaign, on stderr unless ``console`` is given."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("[green]{task.fields[successes]} flips"),
        TextColumn("{task.fields[qps]:.0f} queries/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=False,
    )


@dataclass
class CampaignProgress:
    """Counts successes and, when ``bar`` is given, shows them as attacks finish."""

    bar: Progress | None
    successes: int = 0
    started: float = field(default_factory=time.perf_counter)
    task: TaskID | None = None

    def start(self, description: str, total: int, completed: int) -> None:
        """Start the bar (if any) at ``completed`` of ``total`` attacks."""
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task(
                description, total=total, completed=completed, successes=self.successes, qps=0.0
            )

    def advance(self, success: bool, queries: int) -> None:
        """Count one finished attack; ``queries`` is the target's query count of this run so far."""
        self.successes += bool(success)
        if self.bar is not None and self.task is not None:
            qps = queries / max(time.perf_counter() - self.started, 1e-9)
            self.bar.update(self.task, advance=1, successes=self.successes, qps=qps)

    def stop(self) -> None:
        """Stop the bar (if any)."""
        if self.bar is not None:
            self.bar.stop()


__all__ = ["CampaignProgress", "make_progress"]
