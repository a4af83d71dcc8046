"""The `sft` command: one table of subcommands, each run by a function of a stage's commands module.

A command's module is imported only when that command runs, so `sft --help` answers without
loading torch. `sft train ...`, `python -m sft train ...` and `accelerate launch sft/train.py ...`
share one recipe parser.
"""

import importlib
import sys
from collections.abc import Callable

from sft import verbosity
from sft.errors import DataError, SFTError


class Command:
    def __init__(self, module: str, function: str, summary: str):
        self.module, self.function, self.summary = module, function, summary

    def run(self, argv: list[str]) -> int:
        return int(getattr(importlib.import_module(self.module), self.function)(argv) or 0)


# The order is the pipeline's: data, training, inference, evaluation, sharing, end-to-end runs.
COMMANDS: dict[str, Command] = {
    "data": Command(
        "sft.data.commands", "data_command", "check, prepare, inspect, deduplicate or synthesise instruction data"
    ),
    "train": Command("sft.train", "main", "fine-tune a model from a YAML recipe (SFT: full, LoRA, prompt tuning; DPO)"),
    "prefs": Command(
        "sft.preference.commands", "prefs_command", "build preference pairs from a fine-tune's answers, for DPO"
    ),
    "generate": Command("sft.inference.commands", "generate_command", "one response for one instruction"),
    "chat": Command("sft.inference.commands", "chat_command", "talk to a model interactively, with streamed responses"),
    "serve": Command("sft.inference.commands", "serve_command", "serve a model over an OpenAI-compatible HTTP API"),
    "ui": Command("sft.inference.commands", "ui_command", "a local web page to chat with a model and rate its answers"),
    "eval": Command("sft.evaluation.commands", "eval_command", "generate responses for a data split and score them"),
    "score": Command(
        "sft.evaluation.commands",
        "score_command",
        "score a responses file (records with `output` and `model_response`)",
    ),
    "compare": Command(
        "sft.evaluation.commands",
        "compare_command",
        "run a base model and its fine-tune on the same prompts, side by side",
    ),
    "judge": Command(
        "sft.evaluation.commands",
        "judge_command",
        "grade a responses file with an LLM judge on an OpenAI-compatible server",
    ),
    "merge": Command("sft.models.commands", "merge_command", "merge a LoRA adapter into its base model"),
    "push": Command(
        "sft.hub.commands", "push_command", "upload a model or adapter with a model card to the Hugging Face Hub"
    ),
    "download": Command(
        "sft.hub.commands", "download_command", "download a model snapshot from the Hub into a local directory"
    ),
    "demo": Command(
        "sft.workflows.commands", "demo_command", "fine-tune the offline default on built-in data and show before/after"
    ),
    "reproduce": Command(
        "sft.workflows.commands", "reproduce_command", "split, fine-tune, generate and score: the full results run"
    ),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: sft [--verbose] COMMAND [ARGS...]",
        "",
        "Teach a pretrained causal language model to follow instructions.",
        "",
        "commands:",
    ]
    lines += [f"  {name.ljust(width)}  {command.summary}" for name, command in COMMANDS.items()]
    lines += [
        "",
        "Run `sft COMMAND --help` for a command's options. --verbose (or SFT_VERBOSE=1) shows library",
        "warnings and logs, which are hidden by default.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = verbosity.take_verbose_flag(sys.argv[1:] if argv is None else argv)
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
    verbosity.configure()
    return guarded(lambda: COMMANDS[name].run(rest))


def guarded(action: Callable[[], int]) -> int:
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
