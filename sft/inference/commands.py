"""`sft generate` and `sft chat`: the command line of the inference stage, and the generation options
that `sft eval` and `sft compare` share."""

import argparse
import contextlib
import signal

from sft.errors import SFTError
from sft.inference.settings import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS, GenerationSettings

MODEL_HELP = "Hub id, local model or LoRA adapter directory, or smollm2-135m-instruct"


def add_generation_options(parser: argparse.ArgumentParser, batched: bool = False) -> None:
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=DEFAULT_MAX_NEW_TOKENS,
        help=f"longest response in tokens (default {DEFAULT_MAX_NEW_TOKENS})",
    )
    parser.add_argument(
        "--temperature", type=float, default=0.0, help="0 for greedy decoding (default); above 0 samples"
    )
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass when sampling (default 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for sampling (default 0)")
    if batched:
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            help=f"prompts generated together (default {DEFAULT_BATCH_SIZE}); responses do not depend on it",
        )


def generation_settings(args: argparse.Namespace) -> GenerationSettings:
    """The settings the options of `add_generation_options` describe; bad values are refused here."""
    return GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        batch_size=getattr(args, "batch_size", 1),
    )


def make_generate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sft generate", description="Print one model response for one instruction.")
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("--instruction", required=True, help="the task for the model")
    parser.add_argument("--input", default="", help="optional input the instruction refers to")
    add_generation_options(parser)
    return parser


def generate_command(argv: list[str]) -> int:
    from sft.inference.generate import generate_responses, load_for_inference

    args = make_generate_parser().parse_args(argv)
    settings = generation_settings(args)
    if not args.instruction.strip():
        raise SFTError("--instruction is empty; give the model a task")
    model, tokenizer, template = load_for_inference(args.model)
    record = {"instruction": args.instruction, "input": args.input}
    print(generate_responses(model, tokenizer, [record], settings, template, progress=False)[0].text)
    return 0


def make_chat_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft chat",
        description="Talk to a model: type an instruction and an optional input, and watch the response "
        "stream in. Ctrl-D or Ctrl-C quits.",
    )
    parser.add_argument("model", help=MODEL_HELP)
    add_generation_options(parser)
    return parser


def chat_command(argv: list[str]) -> int:
    from sft.inference.chat import GOODBYE, chat_loop

    args = make_chat_parser().parse_args(argv)
    settings = generation_settings(args)  # bad settings are refused before the model loads
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    print(f"Loading {args.model} ...", flush=True)
    try:
        # Ctrl-C must reach the main thread, which waits for input in readline's select(); a worker thread
        # that took the SIGINT would leave the prompt blocked. Threads inherit the mask of the thread that
        # starts them, so torch's worker pool is started here with SIGINT blocked.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            import torch

            from sft.inference.generate import Generator, load_for_inference

            generator = Generator(*load_for_inference(args.model))
            torch.manual_seed(settings.seed)
            torch.ones(256, 256) @ torch.ones(256, 256)  # starts the intra-op threads now, under the mask
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a Ctrl-C held back lands here
    except KeyboardInterrupt:
        print(f"\n{GOODBYE}")
        return 0
    print(f"Chatting with {args.model}. An input is optional: press Enter to skip it. Ctrl-D or Ctrl-C quits.\n")
    return chat_loop(generator, settings)
