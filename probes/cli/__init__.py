"""The `probes` command line: one module per subcommand."""

from __future__ import annotations

from probes.cli.main import (
    build_parser,
    main,
)

__all__ = [
    "build_parser",
    "main",
]
