"""Layer choices: parse a user's layer list, and pick layers at fractions of a model's depth."""

from __future__ import annotations

from collections.abc import Sequence

from probes.errors import ProbesError


def parse_layers(layers: Sequence[int] | str | None, n_layers: int) -> list[int]:
    """None or 'all' means every layer; '0,4,8', '2-6' (inclusive) and '0-17:3' (every
    third) are accepted."""
    if layers is None or layers == "all":
        return list(range(n_layers))
    if isinstance(layers, str):
        out: list[int] = []
        try:
            for part in layers.split(","):
                span, _, step = part.partition(":")
                if "-" in span.strip()[1:]:
                    lo, hi = span.split("-", 1)
                    out.extend(range(int(lo), int(hi) + 1, int(step or 1)))
                else:
                    out.append(int(part))
        except ValueError as exc:
            raise ProbesError(
                f"cannot read layers {layers!r}: use e.g. 'all', '0,4,8', '2-6' or '0-17:3'"
            ) from exc
        layers = out
    result = sorted({n_layers + int(x) if int(x) < 0 else int(x) for x in layers})
    if not result or result[0] < 0 or result[-1] >= n_layers:
        raise ProbesError(f"layers must lie in 0..{n_layers - 1}, got {list(layers)}")
    return result


def layers_at_depth(n_layers: int, fractions: Sequence[float]) -> list[int]:
    """The layers at ``fractions`` of the depth (rounded; a negative fraction = the last
    layer), sorted and without repeats: ``(0.4, 0.6, 0.8)`` of 18 layers is ``[7, 11, 14]``."""
    return sorted(
        {
            n_layers - 1 if f < 0 else max(0, min(n_layers - 1, round(n_layers * f)))
            for f in fractions
        }
    )
