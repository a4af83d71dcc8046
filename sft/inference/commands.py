"""`sft generate`, `sft chat` and `sft serve`: the command line of the inference stage, and the generation
options that `sft eval` and `sft compare` share."""

import argparse
import contextlib
import io
import os
import signal
import time
from pathlib import Path

from sft.errors import SFTError
from sft.inference.address import LOCALHOST, listening_socket
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


def make_serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft serve",
        description="Serve a model over an OpenAI-compatible HTTP API (/v1/models, /v1/chat/completions with and "
        "without streaming, /v1/completions), built on `transformers serve`. A model sft trained, or one without a "
        "chat template, is prompted as `sft generate` prompts a record (the first user message is the instruction, "
        "a second one the input), and its greedy answer (temperature 0) is the text `sft generate` prints; a model "
        "with a chat template of its own is prompted with that. Ctrl-C stops.",
    )
    parser.add_argument("model", help=f"{MODEL_HELP}; clients send this name as the model")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: all)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000; 0 picks a free one)")
    parser.add_argument(
        "--api-key-env",
        metavar="NAME",
        help="require `Authorization: Bearer KEY` on every request, KEY being the value of environment variable "
        "NAME (the key is never printed); without it no key is needed",
    )
    return parser


def serve_command(argv: list[str]) -> int:
    args = make_serve_parser().parse_args(argv)
    from sft.inference.serve import serve

    return serve(args.model, host=args.host, port=args.port, api_key_env=args.api_key_env)


DEFAULT_PORT = 7860
# Set before Gradio loads: no usage statistics, no version check, no telemetry of the Hub client.
QUIET_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}


def make_ui_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft ui",
        description="A local web page to chat with a model (beside its base model with --base) and to rate the "
        "responses of `sft eval` by hand (--responses). It is served on this machine only by default and loads "
        "nothing from the internet.",
    )
    parser.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    parser.add_argument(
        "--base", metavar="BASE_MODEL", help="a second model that answers the same prompts beside MODEL, e.g. its base"
    )
    parser.add_argument(
        "--responses",
        type=Path,
        metavar="FILE",
        help="a responses.json of `sft eval` to rate; ratings go to human_ratings.json beside it",
    )
    parser.add_argument(
        "--host",
        default=LOCALHOST,
        help=f"address to serve on (default {LOCALHOST}: this machine only; 0.0.0.0 opens it to the network)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to serve on (default {DEFAULT_PORT})")
    return parser


def ui_command(argv: list[str]) -> int:
    """Check the files and the address, load the models, serve the page until Ctrl-C or SIGTERM; returns 0."""
    args = make_ui_parser().parse_args(argv)
    listening_socket(args.host, args.port).close()  # the port must be free before the models load, not after
    os.environ.update(QUIET_ENV)
    from sft.evaluation.ratings import load_ratings, ratings_path, read_responses
    from sft.inference.address import is_loopback, page_url

    records, responses = [], None
    if args.responses is not None:
        responses = args.responses.resolve()
        records = read_responses(responses)  # a bad file or ratings file fails before any model loads
        if not records:
            raise SFTError(f"{args.responses}: holds no records to rate")
        beyond = [index for index in load_ratings(responses) if index >= len(records)]
        if beyond:
            raise SFTError(
                f"{ratings_path(responses)}: rates record {beyond[0]}, but {args.responses} has "
                f"{len(records)} records; these ratings belong to another file"
            )

    import torch

    from sft.inference.generate import Generator, load_for_inference
    from sft.inference.ui import ChatModel, build_page, launch_options

    models = []
    for name, role in [(args.model, "model"), (args.base, "base")]:
        if name:
            print(f"Loading {name} ...", flush=True)
            models.append(ChatModel(name, Generator(*load_for_inference(name)), role))
    torch.manual_seed(0)  # sampled answers (temperature above 0) repeat from one start of the page to the next
    demo = build_page(models, responses, records)
    demo.queue(default_concurrency_limit=1)
    try:
        demo.launch(server_name=args.host, server_port=args.port, **launch_options())
    except OSError as error:  # the port was taken while the models loaded
        raise SFTError(f"cannot serve on {args.host}:{args.port} ({error}); pick another with --port") from None
    where = "" if is_loopback(args.host) else f" (served on {args.host}: other machines can reach it)"
    print(f"sft ui: open {page_url(args.host, args.port)} in a browser{where}; Ctrl-C stops.", flush=True)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    try:
        while not stopping:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.redirect_stdout(io.StringIO()):  # Gradio says it closes the port
            demo.close()
    print("sft ui: stopped.")
    return 0
