"""CLI commands of the index and the demo (index, search, grid, demo)."""

from __future__ import annotations

COMMANDS: dict = {}


def add_index_commands(sub) -> None:
    """Filled in by the index issue."""
