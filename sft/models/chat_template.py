"""A Jinja chat template that renders exactly the prompt a model was trained on, so that every runtime that
prompts through `apply_chat_template` (`transformers serve`, vLLM, llama.cpp, an OpenAI client in front of
any of them) gives the fine-tune the layout it learned, and stops where it learned to stop.

How chat messages map onto an Alpaca record:
- the first user message of a turn is the instruction; a second user message in a row is the record's
  input (more than two are joined by blank lines into the input); an input that is only whitespace is
  left out, as training leaves it out;
- system messages are ignored: the recipe's preamble, which training put above every prompt, stands in
  their place;
- each assistant message closes its turn with the EOS token training taught;
- a conversation of several turns renders each turn as its own Alpaca block (`### Instruction:` ...
  `### Response:` answer EOS), separated by a blank line, under one preamble; the model was trained on
  single turns, so earlier turns are context it has not learned to use.

Written by hand because a fine-tune's prompt layout is sft's own; the rules above are the contract.
"""

import json
from typing import Any

from sft.data.template import PromptTemplate


def adds_bos(tokenizer: Any) -> bool:
    """Whether encoding a prompt starts with the BOS token (Llama-style tokenizers); a chat template is
    tokenized without special tokens, so it must then write BOS itself."""
    if not tokenizer.bos_token or tokenizer.bos_token_id is None:
        return False
    return tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]


def literal(text: str) -> str:
    """`text` as a Jinja string literal: JSON escapes are the ones Jinja's lexer decodes."""
    return json.dumps(text, ensure_ascii=False)


def chat_template(template: PromptTemplate, bos: bool) -> str:
    """The Jinja source; `bos` says whether it starts with the tokenizer's BOS token."""
    blank = "\n\n"
    preamble = f"{{{{- {literal(template.preamble + blank)} -}}}}" if template.preamble else ""
    return "".join(
        [
            # Content may be a string or a list of OpenAI content parts; only text parts count.
            "{%- macro text(content) -%}",
            "{%- if content is string -%}{{- content -}}",
            "{%- else -%}{%- for part in content if part['type'] == 'text' -%}{{- part['text'] -}}{%- endfor -%}",
            "{%- endif -%}",
            "{%- endmacro -%}",
            "{%- macro block(asks) -%}",
            f"{{{{- {literal(template.instruction_header + chr(10))} + asks[0] -}}}}",
            "{%- set input = asks[1:] | join('\\n\\n') -%}",
            f"{{%- if input | trim -%}}{{{{- {literal(blank + template.input_header + chr(10))} + input -}}}}"
            "{%- endif -%}",
            f"{{{{- {literal(blank + template.response_header + chr(10))} -}}}}",
            "{%- endmacro -%}",
            "{{- bos_token -}}" if bos else "",
            preamble,
            "{%- set ns = namespace(asks=[], turns=0) -%}",
            "{%- for message in messages -%}",
            "{%- if message['role'] == 'user' -%}",
            "{%- set ns.asks = ns.asks + [text(message['content'])] -%}",
            "{%- elif message['role'] == 'assistant' and ns.asks -%}",
            "{%- if ns.turns > 0 -%}{{- '\\n\\n' -}}{%- endif -%}",
            "{{- block(ns.asks) -}}{{- text(message['content']) + eos_token -}}",
            "{%- set ns.asks = [] -%}{%- set ns.turns = ns.turns + 1 -%}",
            "{%- endif -%}",
            "{%- endfor -%}",
            "{%- if add_generation_prompt and ns.asks -%}",
            "{%- if ns.turns > 0 -%}{{- '\\n\\n' -}}{%- endif -%}",
            "{{- block(ns.asks) -}}",
            "{%- endif -%}",
        ]
    )


def install_chat_template(tokenizer: Any, template: PromptTemplate) -> None:
    """Give `tokenizer` the chat template of `template`; `save_pretrained` then writes it beside the model."""
    tokenizer.chat_template = chat_template(template, adds_bos(tokenizer))


def stop_at_trained_eos(generation_config: Any, tokenizer: Any) -> None:
    """List the EOS token training taught in the generation config, so that runtimes which read
    generation_config.json (`transformers serve`, vLLM) stop there."""
    eos = tokenizer.eos_token_id
    if eos is None:
        return
    configured = generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured] if configured is not None else []
    if eos not in ids:
        generation_config.eos_token_id = [eos, *ids] if ids else eos
