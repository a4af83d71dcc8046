"""Fine-tune a causal LM on instruction data with TRL's SFTTrainer: the file `accelerate launch` runs.

    accelerate launch sft/train.py recipes/smollm2-135m-lora.yaml [--key value ...]
    sft train recipes/smollm2-135m-lora.yaml
    python -m sft.train recipes/smollm2-135m-lora.yaml

Parses the recipe, then hands it to `sft.training.run.train`. Nothing heavy is imported before the
recipe is parsed, so `--help` answers at once.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Launched as a file: the script's folder would shadow libraries with our module names.
    sys.path[0] = str(Path(__file__).resolve().parents[1])


def main(argv: list[str] | None = None) -> int:
    from sft import verbosity
    from sft.cli import guarded

    argv = verbosity.take_verbose_flag(sys.argv[1:] if argv is None else argv)
    if any(arg in {"-h", "--help"} for arg in argv):
        from sft.training.recipe_help import recipe_help

        print(recipe_help(), end="")
        return 0
    verbosity.configure()

    def run() -> int:
        from sft.training.config import parse_recipe
        from sft.training.run import train

        train(parse_recipe(argv))
        return 0

    return guarded(run)


if __name__ == "__main__":
    raise SystemExit(main())
