"""Reader bundles: the probes and steering directions the live dashboard reads and steers with."""

from __future__ import annotations

from probes.readers.bundle import Reader, ReaderBundle, reading_suffix
from probes.readers.train import READER_ATTRIBUTES, chat_frame, train_reader, train_readers

__all__ = [
    "READER_ATTRIBUTES",
    "Reader",
    "ReaderBundle",
    "chat_frame",
    "reading_suffix",
    "train_reader",
    "train_readers",
]
