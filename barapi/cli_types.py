"""click parameter types shared by barapi's commands."""

from __future__ import annotations

from typing import Any

import click


class NonEmptyPath(click.Path):
    """click.Path that refuses "" (an unset shell variable), which click would read as the
    current folder."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("empty; give a path, or omit the option for its default", param, ctx)
        return super().convert(value, param, ctx)
