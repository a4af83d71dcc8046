"""The `sft` command: one registry of subcommands, each living in its own module.

Subcommand modules are imported only when run, so `sft --help` answers without loading torch.
Every module exposes `main(argv: list[str]) -> int` and builds its own argparse parser, so
`sft train ...`, `python -m sft train ...` and `python -m sft.train ...` share one parser.
"""

import importlib
import sys

from sft.errors import DataError, SFTError

# name -> (module, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("sft.train", "fine-tune a model from a YAML recipe (full, LoRA or prompt tuning)"),
    "eval": ("sft.evaluation", "generate responses for a data split and score them"),
    "score": ("sft.scoring", "score a responses file (records with `output` and `model_response`)"),
    "compare": ("sft.compare", "run a base model and its fine-tune on the same prompts, side by side"),
    "chat": ("sft.chat", "talk to a model interactively, with streamed responses"),
    "generate": ("sft.generate", "one response for one instruction"),
    "data": ("sft.data.commands", "check, prepare, inspect or synthesise instruction data"),
    "merge": ("sft.merge", "merge a LoRA adapter into its base model"),
    "push": ("sft.hub", "upload a model or adapter with a model card to the Hugging Face Hub"),
    "download": ("sft.download", "download a model snapshot from the Hub into a local directory"),
    "demo": ("sft.demo", "fine-tune the offline default on built-in data and show before/after"),
    "reproduce": ("sft.reproduce", "split, fine-tune, generate and score: the full results run"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: sft COMMAND [ARGS...]",
        "",
        "Teach a pretrained causal language model to follow instructions.",
        "",
        "commands:",
    ]
    lines += [f"  {name.ljust(width)}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Run `sft COMMAND --help` for a command's options."]
    return "\n".join(lines)


def run_command(name: str, argv: list[str]) -> int:
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    if argv[0] == "--version":
        from sft import __version__

        print(f"sft {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"sft: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return guarded(lambda: run_command(name, rest))


def guarded(action) -> int:
    """Run `action`, turning user-fixable errors into messages on stderr and exit code 2."""
    try:
        return action()
    except DataError as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except SFTError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
