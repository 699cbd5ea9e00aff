"""The sweep progress bar (rich, on stderr): active runs, epoch, loss, done/total, ETA."""

from __future__ import annotations

from typing import Any


def _loss(values: dict[str, float]) -> float | None:
    """The training loss among a metrics batch (any name with 'loss', train preferred)."""
    names = [n for n in values if "loss" in n]
    names.sort(key=lambda n: (not n.startswith("train"), n))
    return values[names[0]] if names else None


class ProgressView:
    """One bar for the whole sweep; its description lists the runs in flight.

    Args:
        total: runs to execute (skipped ones not counted).
        enabled: False makes every method a no-op (scripts, tests, --quiet).
        title: shown before the bar (the experiment's name).
        console: a rich Console (default: one on stderr).
    """

    def __init__(self, total: int, enabled: bool = True, title: str = "", console: Any = None) -> None:
        self.enabled = enabled and total > 0
        self.active: dict[str, dict[str, Any]] = {}
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.fields[title]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
            console=console or Console(stderr=True),
        )
        self._task = self._progress.add_task("", total=total, title=title)

    def __enter__(self) -> ProgressView:
        if self.enabled:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._progress.stop()

    def _refresh(self) -> None:
        parts = []
        for state in self.active.values():
            text = state["label"]
            if state.get("epoch") is not None:
                text += f" · epoch {state['epoch']}"
            if state.get("loss") is not None:
                text += f" · loss {state['loss']:.4g}"
            parts.append(text)
        self._progress.update(self._task, description=" | ".join(parts))

    def started(self, run_id: str, label: str) -> None:
        if self.enabled:
            self.active[run_id] = {"label": label}
            self._refresh()

    def metrics(self, run_id: str, rows: list[tuple[int, int, str, float]]) -> None:
        if not self.enabled or run_id not in self.active or not rows:
            return
        state = self.active[run_id]
        state["epoch"] = rows[-1][1]
        loss = _loss({name: value for _, _, name, value in rows})
        if loss is not None:
            state["loss"] = loss
        self._refresh()

    def ended(self, run_id: str, status: str) -> None:
        if not self.enabled:
            return
        self.active.pop(run_id, None)
        self._progress.advance(self._task)
        if status not in ("finished", "diverged"):
            self._progress.console.print(f"[red]run {run_id} {status}[/red]")
        self._refresh()


__all__ = ["ProgressView"]
