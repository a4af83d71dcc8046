"""Interactive chat: a loop that streams each response as the model writes it.

Generation runs in a background thread feeding a TextIteratorStreamer; the main thread prints
what is certain to belong to the response, holding back a line that may still turn into one of the
template's headers (where the response ends), so the printed text equals `generate_response`'s result.
Prompt ids, EOS ids, the room in the context and the final cut come from the same `Generator`
that batched generation uses.
"""

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from sft.data.template import PromptTemplate
from sft.inference.generate import (
    GenerationResult,
    Generator,
    header_line,
    model_device,
    template_headers,
    without_echo,
)
from sft.inference.settings import GenerationSettings

GOODBYE = "Goodbye."
NOT_UTF8 = "that input was not valid UTF-8; type or paste it again as UTF-8 text (is the terminal set to UTF-8?)"


class ResponseFilter:
    """Turns streamed chunks of continuation into the printable part of the response."""

    def __init__(self, template: PromptTemplate):
        self.template = template
        self.headers = template_headers(template)
        self.stop = header_line(template)
        self.raw = ""
        self.shown = ""
        self.done = False  # a following header of the template was reached: the rest is not response

    def feed(self, chunk: str) -> str:
        """The text to print now for `chunk`."""
        if self.done:
            return ""
        self.raw += chunk
        if self.template.response_header.startswith(self.raw.lstrip()):
            return ""  # may still be an echoed response header
        text = without_echo(self.raw, self.template)
        match = self.stop.search(text)
        if match:
            self.done = True
            safe = text[: match.start()]
        else:
            # The last line is held back while it may still become a header ("### In" may be "### Input:");
            # a Markdown heading such as "### Step 1" is shown as soon as it cannot.
            tail = text[text.rfind("\n") + 1 :]
            safe = text[: len(text) - len(tail)] if any(h.startswith(tail) for h in self.headers) else text
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
    generator: Generator,
    instruction: str,
    input: str = "",
    settings: GenerationSettings | None = None,
    write: Callable[[str], Any] = sys.stdout.write,
) -> GenerationResult:
    """Generate one response, passing its text to `write` piece by piece as it is produced."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    settings = settings or GenerationSettings()
    model, tokenizer = generator.model, generator.tokenizer
    prompt = generator.encode([{"instruction": instruction, "input": input}])[0]
    room = generator.room(len(prompt), settings.max_new_tokens)
    stop = threading.Event()

    class StopRequested(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    ids = torch.tensor([prompt], device=model_device(model))
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
                    **generator.generate_kwargs(settings),
                )
        except BaseException as error:  # reported by the main thread
            outcome["error"] = error
            streamer.end()  # wake the main thread, which waits on the streamer

    model.eval()
    worker = threading.Thread(target=run, name="sft-chat-generate", daemon=True)
    shown = ResponseFilter(generator.template)
    worker.start()
    try:
        for chunk in streamer:
            write(shown.feed(chunk))
            if shown.done:
                stop.set()  # the model went on to a new block of the template; the rest is not response
    finally:
        stop.set()
        worker.join()
    if "error" in outcome:
        raise outcome["error"]
    result = generator.finish(outcome["ids"][0, len(prompt) :].tolist())
    write(shown.close(result.text))
    return result


def ask(read: Callable[[str], str], prompt: str) -> str:
    """A line from `read`, stripped, asked for again while it is not valid UTF-8: a strict stdin raises
    UnicodeDecodeError, one with surrogateescape (a C locale, UTF-8 mode) hands over lone surrogates."""
    while True:
        try:
            text = read(prompt)
            text.encode("utf-8")
            return text.strip()
        except (UnicodeDecodeError, UnicodeEncodeError):
            print(NOT_UTF8)


def chat_loop(generator: Generator, settings: GenerationSettings, read: Callable[[str], str] = input) -> int:
    """Ask for instructions until EOF or Ctrl-C; returns the exit code (0)."""

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        while True:
            instruction = ask(read, "Instruction: ")
            if not instruction:
                print("Please type an instruction (Ctrl-D or Ctrl-C quits).")
                continue
            extra = ask(read, "Input (optional, Enter for none): ")
            write("Response: ")
            started = time.perf_counter()
            try:
                result = stream_response(generator, instruction, extra, settings, write=write)
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
