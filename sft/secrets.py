"""What counts as a secret, and how one is kept out of logs and saved files.

A secret is any option, recipe key or variable whose name says token or key (`hub_token`,
`api_key`, `WANDB_API_KEY`), except the tokenizer's special-token settings, which name vocabulary
entries, not credentials. Saved recipes record that such a value was given, never the value.
"""

import re
from collections.abc import Mapping, Sequence
from typing import Any

# `eos_token: "<|im_end|>"` is a vocabulary entry, not a credential.
SPECIAL_TOKEN_NAMES = frozenset(
    f"{kind}_token" for kind in ("eos", "pad", "bos", "unk", "sep", "cls", "mask", "additional_special")
)
SECRET_NAME = re.compile(r"(?:^|[_-])(?:token|key|apikey|secret|password|passwd)$")
GIVEN = "<given; not saved>"


def is_secret_name(name: str) -> bool:
    """Whether an option, recipe key or environment variable called `name` holds a credential."""
    name = name.lower().lstrip("-")
    return name not in SPECIAL_TOKEN_NAMES and SECRET_NAME.search(name) is not None


def redact(value: Any) -> Any:
    """`value` with every secret-named entry of every mapping inside it replaced by a marker."""
    if isinstance(value, Mapping):
        return {
            key: (GIVEN if item else item) if is_secret_name(str(key)) else redact(item) for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(item) for item in value]
    return value


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line fit to print: the value of every secret-named option is replaced by a marker."""
    shown: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            shown.append(GIVEN)
            hide_next = False
        elif arg.startswith("-") and "=" in arg and is_secret_name(arg.split("=", 1)[0]):
            shown.append(f"{arg.split('=', 1)[0]}={GIVEN}")
        else:
            shown.append(arg)
            hide_next = arg.startswith("-") and is_secret_name(arg)
    return shown
