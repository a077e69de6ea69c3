"""Progress reporting that the round logic can call without knowing about terminals."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator


class UI:
    """Silent default; the CLI passes a rich-backed subclass."""

    def log(self, message: str) -> None:
        pass

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        yield lambda n=1: None


class RichUI(UI):
    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True)

    def log(self, message: str) -> None:
        self.console.log(message)

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=True) as progress:
            task_id = progress.add_task(description, total=total)
            yield lambda n=1: progress.advance(task_id, n)
        self.console.log(f"{description}: done")
