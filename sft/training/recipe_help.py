"""`sft train --help` in well under a second.

The recipe parser is built from TRL's and Transformers' config classes, and importing them takes
seconds (torch, then Transformers' training stack). The help text they produce changes only when sft's
config code or those libraries change, so it is rendered once and kept in sft's cache under a key made
of exactly those: the versions of the libraries and the source of the modules that define the fields.
"""

import hashlib
import sys
from importlib import metadata
from pathlib import Path

LIBRARIES = ("trl", "transformers", "peft", "accelerate")
# The modules whose dataclasses make up the recipe parser.
SOURCES = ("config.py", "../data/split.py", "../models/load.py")


def help_key() -> str:
    digest = hashlib.sha256(sys.version.encode())
    for name in LIBRARIES:
        try:
            digest.update(f"{name}={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name}=absent".encode())
    here = Path(__file__).resolve().parent
    for source in SOURCES:
        digest.update((here / source).read_bytes())
    return digest.hexdigest()[:20]


def recipe_help() -> str:
    """The recipe parser's help text, from the cache when it is current."""
    from sft.paths import atomic_write_text, cache_dir

    path = cache_dir() / "help" / f"train-{help_key()}.txt"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    from sft.training.config import make_parser

    text = make_parser().format_help()
    atomic_write_text(path, text)
    return text
