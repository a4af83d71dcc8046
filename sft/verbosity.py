"""Quiet by default: a command shows its progress bars, results and sft's own log lines. Library
warnings (FutureWarning, UserWarning, font-cache notices, Transformers' advice) and Transformers' per-file
bars appear only with `--verbose` or `SFT_VERBOSE=1`."""

import logging
import os
import warnings
from collections.abc import Sequence

ENV = "SFT_VERBOSE"
FLAGS = ("--verbose",)
# Libraries that log through the standard logging module and are chatty at WARNING.
CHATTY_LOGGERS = ("matplotlib", "accelerate", "torch.distributed", "datasets", "transformers", "peft", "trl")
CHATTY_WARNINGS = (FutureWarning, UserWarning, DeprecationWarning, RuntimeWarning)


def is_verbose() -> bool:
    return os.environ.get(ENV, "").lower() in {"1", "true", "yes", "on"}


def take_verbose_flag(argv: Sequence[str]) -> list[str]:
    """`argv` without `--verbose`; the flag, where present, turns verbose output on for this process and
    the processes it starts."""
    rest = [arg for arg in argv if arg not in FLAGS]
    if len(rest) < len(argv):
        os.environ[ENV] = "1"
    return rest


def configure() -> None:
    """Show or hide library chatter as the verbosity says; call before the libraries are imported."""
    quiet = not is_verbose()
    for category in CHATTY_WARNINGS:
        warnings.filterwarnings("ignore" if quiet else "default", category=category)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR if quiet else logging.NOTSET)


def library_level() -> int:
    """The level for Transformers' and datasets' own loggers."""
    return logging.INFO if is_verbose() else logging.ERROR


def quiet_libraries() -> None:
    """Transformers' and datasets' own loggers at the chosen level, and Transformers' per-file bars (loading
    weights, writing shards, well under a second for the models sft trains) hidden unless verbose. The Hub's
    download bars stay, as they can matter for minutes; Transformers switches both at once, hence its
    private flag."""
    import datasets
    import transformers

    for library in (transformers, datasets):
        library.utils.logging.set_verbosity(library_level())
    if not is_verbose() and hasattr(transformers.utils.logging, "_tqdm_active"):
        transformers.utils.logging._tqdm_active = False
