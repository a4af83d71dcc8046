"""`sft chat`: an interactive loop that streams each response as the model writes it.

Generation runs in a background thread feeding a TextIteratorStreamer; the main thread prints
what is certain to belong to the response, holding back a line that may turn into a `### `
header (where the response ends), so the printed text equals `generate_response`'s result.
"""

import argparse
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from sft.data.template import PromptTemplate
from sft.errors import SFTError
from sft.generate import DEFAULT_MAX_NEW_TOKENS, HEADER_LINE, GenerationResult, add_generation_options

GOODBYE = "Goodbye."


class ResponseFilter:
    """Turns streamed chunks of continuation into the printable part of the response."""

    def __init__(self, template: PromptTemplate):
        self.header = template.response_header
        self.raw = ""
        self.shown = ""
        self.done = False  # a following `### ` header was reached: the rest is not response

    def feed(self, chunk: str) -> str:
        """The text to print now for `chunk`."""
        if self.done:
            return ""
        self.raw += chunk
        text = self.raw.lstrip()
        if self.header.startswith(text):
            return ""  # may still be an echoed response header
        text = text.removeprefix(self.header).lstrip()
        match = HEADER_LINE.search(text)
        if match:
            self.done = True
            safe = text[: match.start()]
        else:
            tail = text[text.rfind("\n") + 1 :]
            safe = text[: len(text) - len(tail)] if "###".startswith(tail[:3]) else text
        return self._advance(safe.rstrip())

    def close(self, final: str) -> str:
        """What is left to print once generation has ended, given the finished response."""
        return final[len(self.shown) :] if final.startswith(self.shown) else ""

    def _advance(self, safe: str) -> str:
        if not safe.startswith(self.shown):
            return ""
        new, self.shown = safe[len(self.shown) :], safe
        return new


def stream_response(
    model: Any,
    tokenizer: Any,
    template: PromptTemplate,
    instruction: str,
    input: str = "",
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
    top_p: float = 1.0,
    write: Callable[[str], Any] = sys.stdout.write,
) -> GenerationResult:
    """Generate one response, passing its text to `write` piece by piece as it is produced."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    from sft.data.tokenize import encode_prompts
    from sft.generate import context_limit, eos_token_ids, finish, model_device, sampling_kwargs

    prompt = encode_prompts(tokenizer, [template.render(instruction, input)])[0]
    limit = context_limit(model)
    room = max_new_tokens if limit is None else min(max_new_tokens, limit - len(prompt))
    if room < 1:
        raise SFTError(f"the prompt is {len(prompt)} tokens, the model's whole context; shorten the input")
    eos_ids = eos_token_ids(model, tokenizer)
    stop = threading.Event()

    class StopRequested(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    device = model_device(model)
    ids = torch.tensor([prompt], device=device)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            with torch.inference_mode():
                outcome["ids"] = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=room,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([StopRequested()]),
                    eos_token_id=eos_ids,
                    pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0],
                    use_cache=True,
                    **sampling_kwargs(temperature, top_p),
                )
        except BaseException as error:  # reported by the main thread
            outcome["error"] = error
            streamer.end()  # wake the main thread, which waits on the streamer

    model.eval()
    worker = threading.Thread(target=run, name="sft-chat-generate", daemon=True)
    shown = ResponseFilter(template)
    worker.start()
    try:
        for chunk in streamer:
            write(shown.feed(chunk))
            if shown.done:
                stop.set()  # the model went on to a new `###` block; the rest is not response
    finally:
        stop.set()
        worker.join()
    if "error" in outcome:
        raise outcome["error"]
    result = finish(outcome["ids"][0, len(prompt) :].tolist(), tokenizer, eos_ids, template)
    write(shown.close(result.text))
    return result


def chat_loop(
    model: Any,
    tokenizer: Any,
    template: PromptTemplate,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
    top_p: float = 1.0,
    read: Callable[[str], str] = input,
) -> int:
    """Ask for instructions until EOF or Ctrl-C; returns the exit code (0)."""

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        while True:
            instruction = read("Instruction: ").strip()
            if not instruction:
                print("Please type an instruction (Ctrl-D or Ctrl-C quits).")
                continue
            extra = read("Input (optional, Enter for none): ").strip()
            write("Response: ")
            started = time.perf_counter()
            try:
                result = stream_response(
                    model, tokenizer, template, instruction, extra, max_new_tokens, temperature, top_p, write=write
                )
            except (KeyboardInterrupt, EOFError):
                raise
            except Exception as error:  # one failed response should not end the session
                print(f"\nerror: no response ({type(error).__name__}: {error}); try another instruction")
                continue
            why = "" if result.ended_at_eos else ", stopped at the token limit"
            print(f"\n[{result.new_tokens} tokens in {time.perf_counter() - started:.1f} s{why}]\n")
    except (EOFError, KeyboardInterrupt):
        print(f"\n{GOODBYE}")
        return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft chat",
        description="Talk to a model: type an instruction and an optional input, and watch the response "
        "stream in. Ctrl-D or Ctrl-C quits.",
    )
    parser.add_argument("model", help="Hub id, local model or LoRA adapter directory, or smollm2-135m-instruct")
    add_generation_options(parser)
    return parser


def main(argv: list[str]) -> int:
    args = make_parser().parse_args(argv)
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

            from sft.generate import load_for_inference, sampling_kwargs

            sampling_kwargs(args.temperature, args.top_p)  # reject bad settings before the session starts
            model, tokenizer, template = load_for_inference(args.model)
            torch.manual_seed(args.seed)
            torch.ones(256, 256) @ torch.ones(256, 256)  # starts the intra-op threads now, under the mask
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a Ctrl-C held back lands here
    except KeyboardInterrupt:
        print(f"\n{GOODBYE}")
        return 0
    print(f"Chatting with {args.model}. An input is optional: press Enter to skip it. Ctrl-D or Ctrl-C quits.\n")
    return chat_loop(model, tokenizer, template, args.max_new_tokens, args.temperature, args.top_p)


if __name__ == "__main__":
    from sft.cli import guarded

    sys.exit(guarded(lambda: main(sys.argv[1:])))
