"""Writing figures: HTML always (plotly.js beside it), PNG through one kept kaleido
server when a browser is found."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import plotly.graph_objects as go

from probes.atomic import atomic_write_bytes, atomic_write_text


def browser_for_png() -> str | None:
    """A Chromium/Chrome binary kaleido can drive, if one is installed."""
    for candidate in (
        os.environ.get("BROWSER_PATH"),
        "chromium",
        "chromium-browser",
        "google-chrome",
    ):
        if candidate and (path := shutil.which(candidate)):
            return path
    return None


def save_figure(fig: go.Figure, stem: str | Path, png: bool = True) -> list[Path]:
    """Write ``stem.html`` (plotly.js beside it, so it opens offline) and, if possible, PNG.

    Also writes ``stem.json`` (the figure as plotly JSON), which ``report.html`` embeds; it is
    not in the returned list, which names the files meant for a reader (HTML, then PNG).
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    html = fig.to_html(include_plotlyjs="directory", full_html=True)
    written = [atomic_write_text(stem.with_suffix(".html"), html)]
    atomic_write_text(stem.with_suffix(".json"), fig.to_json())
    js = stem.parent / "plotly.min.js"
    if not js.exists():
        from plotly.offline import get_plotlyjs

        atomic_write_text(js, get_plotlyjs())
    if png and (data := png_bytes(fig)) is not None:
        written.append(atomic_write_bytes(stem.with_suffix(".png"), data))
    return written


_KALEIDO_SERVER: list[bool] = []  # [started?] once the first PNG was asked for


def _start_kaleido_server() -> None:
    """One headless browser for the whole process: a one-shot export starts Chromium for every
    figure (about 2.5 s each on this CPU); a kept server draws one in about 0.4 s."""
    import atexit

    import kaleido

    try:
        kaleido.start_sync_server(silence_warnings=True)
    except Exception:  # an old kaleido or a server that will not start: one-shot exports
        _KALEIDO_SERVER.append(False)
        return
    _KALEIDO_SERVER.append(True)
    atexit.register(kaleido.stop_sync_server, silence_warnings=True)


def png_bytes(fig: go.Figure, scale: int = 2) -> bytes | None:
    """The figure as PNG, or None where no browser is installed or kaleido fails."""
    browser = browser_for_png()
    if browser is None:
        return None
    os.environ.setdefault("BROWSER_PATH", browser)
    if not _KALEIDO_SERVER:
        _start_kaleido_server()
    try:
        with warnings.catch_warnings():  # plotly warns that kopts are ignored by a server
            warnings.simplefilter("ignore", UserWarning)
            return fig.to_image(format="png", scale=scale)
    except Exception:  # kaleido failing must not lose the HTML already written
        return None
