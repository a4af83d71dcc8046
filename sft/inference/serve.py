"""`sft serve`: an OpenAI-compatible HTTP API for any model sft takes, built on `transformers serve`.

Transformers' server (FastAPI app, request validation, chat templating, streaming, `/v1/models`) does the
work; this module adds only what it lacks for sft's models:

- loading: its `ModelManager` loads an id or path with AutoConfig/AutoModel, which reads neither a PEFT
  adapter directory nor sft's names (`smollm2-135m-instruct`, converted into sft's cache on first use; the
  tiny test models). `SftModelManager` loads the one model through `sft.inference.generate.load_for_inference`
  (the loader of `sft generate`) and pins it under the name given on the command line;
- prompting: a model without a chat template gets sft's Alpaca one, so a chat is prompted as `sft generate`
  prompts a record; the trained EOS is listed in the generation config, as `sft generate` stops there;
- responses: where the chat template renders sft's prompt, a chat response is cut exactly as `sft generate`
  cuts it (see `SftChatCompletionHandler`), so greedy answers are the same text;
- a bearer key (`--api-key-env`), binding to 127.0.0.1 by default, one-line errors and quiet logs.
"""

import contextlib
import hmac
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from transformers.utils.import_utils import is_serve_available

from sft import verbosity
from sft.data.template import PromptTemplate
from sft.errors import SFTError
from sft.inference.address import LOCALHOST, listening_socket

if not is_serve_available():
    raise SFTError("sft serve needs the serving extra of Transformers: pip install 'transformers[serving]'")
try:
    from fastapi import HTTPException, Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from transformers.cli.serving.chat_completion import ChatCompletionHandler
    from transformers.cli.serving.completion import CompletionHandler
    from transformers.cli.serving.model_manager import ModelManager, TimedModel
    from transformers.cli.serving.server import build_server
    from transformers.cli.serving.utils import GenerationState, ReasoningText
except ImportError as error:  # an older Transformers 5 lays its server out otherwise
    raise SFTError(f"sft serve needs a Transformers whose `transformers serve` has cli/serving ({error})") from None

DEFAULT_PORT = 8000
# Endpoints of transformers serve that sft does not adapt: left out rather than served without sft's prompting
# and cutting (/v1/responses, /v1/systemone), for audio, or able to unload the pinned model (/reset, /load_model).
LEFT_OUT_ROUTES = ("/v1/responses", "/v1/systemone", "/v1/audio/transcriptions", "/load_model", "/reset")
# Probes of whether a chat template renders sft's prompt: one record without and one with an input.
PROBES = (("Name a colour.", ""), ("Rewrite the sentence.", "The quick brown fox."))


@dataclass
class ServedModel:
    """The one model a server answers for, with what sft generates from."""

    name: str  # as given on the command line: the model name clients send
    model: Any
    tokenizer: Any
    template: PromptTemplate
    sft_prompted: bool  # its chat template renders sft's prompt: responses are cut as `sft generate` cuts them
    generator: Any  # sft's `Generator`: the room a prompt leaves in the context
    notes: list[str] = field(default_factory=list)  # for the startup line


def chat_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def renders_sft_prompt(tokenizer: Any, template: PromptTemplate) -> bool:
    """Whether the tokenizer's chat template gives, token for token, the prompt `sft generate` gives for a
    record (instruction as the first user message, input as a second), as every fine-tune sft writes does."""
    from sft.data.tokenize import encode_prompts

    for instruction, input in PROBES:
        messages = [{"role": "user", "content": instruction}] + ([{"role": "user", "content": input}] if input else [])
        try:
            ids = chat_ids(tokenizer, messages)
        except Exception:  # e.g. a template that insists on alternating roles: not sft's
            return False
        if ids != encode_prompts(tokenizer, [template.render(instruction, input)])[0]:
            return False
    return True


def merge_lora(model: Any) -> Any:
    """A LoRA adapter merged into its base in memory: SmolLM2-135M with a rank-16 adapter on every linear layer
    generated 2.5x as many tokens/s merged as unmerged on a 2-core CPU. Only in fp32: merged into bf16 or fp16
    weights, the adapter's update is rounded into them and greedy answers could drift from `sft generate`'s,
    which runs the adapter unmerged (in fp32 the two differ by float rounding only)."""
    import torch
    from peft import PeftModel

    if not isinstance(model, PeftModel) or model.active_peft_config.is_prompt_learning:
        return model
    if next(model.parameters()).dtype != torch.float32:
        return model
    merged = model.merge_and_unload()
    merged.eval()
    return merged


def load_served_model(name: str) -> ServedModel:
    """The model as `sft generate` loads it (adapters applied, the offline default converted), ready to serve."""
    from sft.inference.generate import Generator, load_for_inference
    from sft.models.chat_template import install_chat_template, stop_at_trained_eos

    model, tokenizer, template = load_for_inference(name)
    model = merge_lora(model)
    notes = []
    if tokenizer.chat_template is None:
        # The tiny test models and fine-tunes older than sft's chat templates have none, and transformers serve
        # cannot chat with them (apply_chat_template fails). sft's Alpaca template, with the preamble the model
        # was trained with, renders the prompt `sft generate` gives it.
        install_chat_template(tokenizer, template)
        notes.append("the model has no chat template: chats are prompted with sft's Alpaca template")
    sft_prompted = renders_sft_prompt(tokenizer, template)
    if not sft_prompted:
        notes.append("chats are prompted with the model's own chat template")
    # `sft generate` stops at the tokenizer's EOS as well as the generation config's; transformers serve
    # stops only at the generation config's, so the tokenizer's is added there (sft's fine-tunes list it).
    stop_at_trained_eos(model.generation_config, tokenizer)
    return ServedModel(name, model, tokenizer, template, sft_prompted, Generator(model, tokenizer, template), notes)


class SftModelManager(ModelManager):
    """transformers serve's model manager, pinned to one model that sft loaded.

    The base class loads `force_model` with AutoConfig/AutoModel from a Hub id or a path: neither a PEFT
    adapter directory nor sft's offline default name load that way. Here the model is loaded by sft (see
    `load_served_model`) and registered under the name given on the command line, which `/v1/models` lists
    and requests must name (or leave out). It is never unloaded for idleness.
    """

    def __init__(self, served: ServedModel):
        super().__init__()  # no force_model here: the base class would load it its own way
        self.force_model = served.name
        self.model_timeout = -1
        self.served = served
        self.loaded_models[served.name] = TimedModel(served.model, timeout_seconds=-1, processor=served.tokenizer)

    @staticmethod
    def process_model_name(model_id: str) -> str:
        return model_id  # sft's model names are no Hub ids with a revision: kept as given

    def load_model_and_processor(
        self,
        model_id_and_revision: str,
        progress_callback: Any = None,
        tqdm_class: Any = None,
        gguf_file: str | None = None,
    ) -> tuple[Any, Any]:
        timed = self.loaded_models.get(model_id_and_revision)
        if gguf_file is not None or timed is None or timed.model is None:
            raise HTTPException(status_code=404, detail=f"this server serves only '{self.force_model}'")
        return timed.model, timed.processor


class GenerateAsSft:
    """The model as transformers' generate managers see it: its `generate` gives a prompt at most the room
    left in the model's context (as `sft generate` does, rather than failing past the last position) and, for
    a chat prompted as sft prompts, stops where the model starts a new block of the template, as
    `sft generate` stops (`stop_at_header`). Everything else is the model's."""

    def __init__(self, model: Any, served: ServedModel, chat: bool):
        self._model, self._served, self._chat = model, served, chat

    def generate(self, **kwargs: Any) -> Any:
        from transformers import StoppingCriteriaList

        from sft.inference.generate import stop_at_header

        width = kwargs["input_ids"].shape[-1]
        config = kwargs.get("generation_config")
        if config is not None and config.max_new_tokens is not None:
            config.max_new_tokens = self._served.generator.room(width, config.max_new_tokens)
        if self._chat and self._served.sft_prompted:
            stop = stop_at_header(self._served.tokenizer, self._served.template, width)
            kwargs["stopping_criteria"] = StoppingCriteriaList([stop])
        return self._model.generate(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class ResponseQueue:
    """The queue of streamed text chunks a chat handler reads, passed through sft chat's `ResponseFilter`: the
    chunks joined equal the response `sft generate` prints (no leading or trailing whitespace, nothing from a
    following header of the template on)."""

    def __init__(self, queue: Any, template: PromptTemplate):
        from sft.inference.chat import ResponseFilter

        self._queue = queue
        self._filter = ResponseFilter(template)
        self._pending: list[Any] = []

    def _convert(self, item: Any) -> tuple[bool, Any]:
        """(whether to hand `item` on, what to hand on)."""
        from sft.inference.generate import extract_response

        if item is None:  # the end: what the filter held back and belongs to the response, then the end
            rest = self._filter.close(extract_response(self._filter.raw, self._filter.template))
            if rest:
                self._pending.append(None)
                return True, rest
            return True, None
        if isinstance(item, str) and not isinstance(item, ReasoningText):
            shown = self._filter.feed(item)
            return bool(shown), shown
        return True, item  # errors, tool calls and reasoning pass as they are

    async def get(self) -> Any:
        while True:
            if self._pending:
                return self._pending.pop(0)
            keep, item = self._convert(await self._queue.get())
            if keep:
                return item

    def get_nowait(self) -> Any:
        while True:
            if self._pending:
                return self._pending.pop(0)
            keep, item = self._convert(self._queue.get_nowait())  # QueueEmpty when nothing is there
            if keep:
                return item


class SftGeneration:
    """A generate manager of transformers serve, generating through `GenerateAsSft` and, for chats prompted
    as sft prompts, streaming through `ResponseQueue`."""

    def __init__(self, inner: Any, served: ServedModel, chat: bool):
        self._inner, self._served, self._chat = inner, served, chat

    def generate_streaming(
        self, model: Any, processor: Any, inputs: Any, gen_config: Any, request_id: str, response_parser: Any = None
    ) -> tuple[Any, Any]:
        queue, streamer = self._inner.generate_streaming(
            GenerateAsSft(model, self._served, self._chat),
            processor,
            inputs,
            gen_config,
            request_id=request_id,
            response_parser=response_parser,
        )
        if self._chat and self._served.sft_prompted:
            queue = ResponseQueue(queue, self._served.template)
        return queue, streamer

    async def generate_non_streaming(
        self, model: Any, processor: Any, inputs: Any, gen_config: Any, request_id: str
    ) -> tuple[str, int, Any]:
        return await self._inner.generate_non_streaming(
            GenerateAsSft(model, self._served, self._chat), processor, inputs, gen_config, request_id=request_id
        )


def sample_as_sft(config: Any, body: dict) -> Any:
    """OpenAI's and sft's meaning of `temperature`: 0 decodes greedily, above 0 samples. transformers serve
    turns sampling off for 0 but never on: above 0 it sets the temperature and leaves `do_sample` as the model's
    generation config has it (False for most models, sft's among them), so `temperature: 1` still decoded
    greedily. Above 0 it samples here as `sft generate --temperature T --top-p P --seed S` does (nucleus
    sampling, top-k off), so a seeded request draws what that command draws. Without a temperature the model's
    generation config decides, as in `transformers serve` (greedy for sft's models, as `sft generate`)."""
    temperature = body.get("temperature")
    if temperature is not None and float(temperature) > 0:
        config.do_sample = True
        config.top_k = 0
    return config


class ServedAsSft:
    """What both of sft's handlers change in transformers serve's: generation settings read as `sft generate` reads
    them, and generation run through `SftGeneration` (sft's room and stopping; `chat` says whether the prompt is
    the chat template's). The arguments of `_streaming` and `_non_streaming` after the generation manager (tools,
    suffix) pass as they are."""

    chat: bool

    def __init__(self, served: ServedModel, **kwargs: Any):
        super().__init__(**kwargs)
        self.served = served

    def _build_generation_config(self, body: dict, model_generation_config: Any, use_cb: bool = False) -> Any:
        return sample_as_sft(super()._build_generation_config(body, model_generation_config, use_cb), body)

    def _streaming(
        self, request_id, model, processor, model_id, inputs, gen_config, gen_manager, *rest, **named
    ) -> Any:
        gen_manager = SftGeneration(gen_manager, self.served, chat=self.chat)
        response = super()._streaming(
            request_id, model, processor, model_id, inputs, gen_config, gen_manager, *rest, **named
        )
        response.body_iterator = ending_with_done(response.body_iterator)
        return response

    async def _non_streaming(
        self, request_id, model, processor, model_id, inputs, gen_config, gen_manager, *rest, **named
    ) -> Any:
        gen_manager = SftGeneration(gen_manager, self.served, chat=self.chat)
        return await super()._non_streaming(
            request_id, model, processor, model_id, inputs, gen_config, gen_manager, *rest, **named
        )


async def ending_with_done(chunks: Any) -> Any:
    """The event stream, then `data: [DONE]`: OpenAI's API ends every stream so, and clients that read the
    events themselves wait for it; transformers serve ends it without."""
    async for chunk in chunks:
        yield chunk
    yield "data: [DONE]\n\n"


class SftChatCompletionHandler(ServedAsSft, ChatCompletionHandler):
    """`/v1/chat/completions` as transformers serve answers it, with responses cut as `sft generate` cuts them.

    transformers serve returns the decoded continuation as it is: surrounding whitespace kept, and a model
    that goes on with a new `### Instruction:` block runs on to EOS or the token limit. `sft generate` strips
    the whitespace and ends the response where a line begins with one of the template's headers. OpenAI
    `stop` sequences cannot say that: a stop string stops anywhere in a line (a header is one only at the start
    of a line), stops at an echoed `### Response:` that sft skips, and transformers leaves the stop string in
    the text. So generation stops with sft's own stopping criterion and the text is cut by sft's own functions
    (`extract_response`, and sft chat's `ResponseFilter` for streams): the same code, the same text. Only for a
    model whose chat template renders sft's prompt; another chat template's output is left as it is.
    """

    chat = True

    def _build_completion(self, request_id: str, content: str, model_id: str, *args: Any, **kwargs: Any) -> dict:
        from sft.inference.generate import extract_response

        if self.served.sft_prompted and content is not None:
            content = extract_response(content, self.served.template)
        return super()._build_completion(request_id, content, model_id, *args, **kwargs)


class SftCompletionHandler(ServedAsSft, CompletionHandler):
    """`/v1/completions` as transformers serve answers it: the raw prompt continued as it is, no template, no
    cutting; only the token budget is kept within the model's context (`GenerateAsSft`)."""

    chat = False


def openai_error(status: int, message: str, kind: str, code: str | None = None, **headers: str) -> Any:
    """An error body as OpenAI's API words it, which its clients read."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers or None)


def require_bearer_key(app: Any, key: str) -> None:
    """Refuse (401) every request without `Authorization: Bearer <key>`. transformers serve has no
    authentication at all. The comparison takes the same time wherever the keys differ; the key is never
    logged, and the refusal does not echo what was sent."""
    expected = key.encode("utf-8", "surrogateescape")

    @app.middleware("http")
    async def bearer_key(request: Request, call_next: Any) -> Any:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        supplied = given.strip().encode("utf-8", "surrogateescape")
        if not (scheme.lower() == "bearer" and hmac.compare_digest(supplied, expected)):
            return openai_error(
                401,
                "missing or wrong API key: send the header `Authorization: Bearer <key>`",
                "invalid_request_error",
                "invalid_api_key",
                **{"WWW-Authenticate": "Bearer"},
            )
        return await call_next(request)


def build_app(served: ServedModel, key: str | None = None) -> Any:
    """transformers serve's FastAPI app for one model loaded by sft, with sft's handlers for chats and
    completions; `key` makes every request need it as a bearer token."""
    manager = SftModelManager(served)
    state = GenerationState()
    chat = SftChatCompletionHandler(served, model_manager=manager, generation_state=state)
    completion = SftCompletionHandler(served, model_manager=manager, generation_state=state)
    app = build_server(
        manager,
        chat,
        completion_handler=completion,
        response_handler=None,
        transcription_handler=None,
        systemone_handler=None,
        generation_state=state,
    )
    app.router.routes[:] = [route for route in app.router.routes if getattr(route, "path", "") not in LEFT_OUT_ROUTES]

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Any:
        # FastAPI words errors as {"detail": ...}; OpenAI's clients show only {"error": {"message": ...}}.
        kind = "invalid_request_error" if error.status_code < 500 else "server_error"
        return openai_error(error.status_code, str(error.detail), kind, **(error.headers or {}))

    @app.exception_handler(SFTError)
    async def user_error(request: Request, error: SFTError) -> Any:  # e.g. a prompt that fills the context
        return openai_error(400, str(error), "invalid_request_error")

    if key is not None:
        require_bearer_key(app, key)
    return app


def read_key(variable: str) -> str:
    """The key held by environment variable `variable`; it is never printed."""
    if not variable.strip():
        raise SFTError("--api-key-env needs the name of an environment variable holding the key")
    value = os.environ.get(variable, "").strip()
    if not value:
        raise SFTError(f"--api-key-env names {variable}, which is not set or empty; export the key in it first")
    return value


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"


def startup_line(served: ServedModel, url: str, key_variable: str | None) -> str:
    notes = [*served.notes]
    notes.append(f"requests need `Authorization: Bearer ${key_variable}`" if key_variable else "no API key needed")
    return f"Serving {served.name} at {url} ({'; '.join(notes)}). Ctrl-C stops."


def serve(name: str, host: str = LOCALHOST, port: int = DEFAULT_PORT, api_key_env: str | None = None) -> int:
    """Serve model `name` until interrupted; returns the exit code."""
    import uvicorn

    key = read_key(api_key_env) if api_key_env is not None else None
    sock = listening_socket(host, port)
    try:
        served = load_served_model(name)
        app = build_app(served, key)
        verbose = verbosity.is_verbose()
        # Quiet like every sft command: uvicorn's warnings and errors only, access logs with --verbose.
        config = uvicorn.Config(
            app,
            log_level="info" if verbose else "warning",
            access_log=verbose,
            timeout_graceful_shutdown=5,  # Ctrl-C during a long generation stops within seconds
        )
        print(startup_line(served, base_url(sock), api_key_env), flush=True)
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn shuts down gracefully, then passes Ctrl-C on
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0
