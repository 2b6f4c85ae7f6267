"""The `probes` command line: one module per subcommand."""

from __future__ import annotations

from probes.cli.app import (
    build_parser,
    main,
)

__all__ = [
    "build_parser",
    "main",
]
