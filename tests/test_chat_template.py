"""The chat template a fine-tune carries renders, token for token, the prompt `sft` generates from."""

import copy

import pytest

from sft.data.template import PromptTemplate
from sft.data.tokenize import encode_prompts
from sft.models.chat_template import adds_bos, chat_template, install_chat_template

TEMPLATES = [
    PromptTemplate(),
    PromptTemplate(preamble=""),
    PromptTemplate(preamble='Answer "briefly" \\ politely: été, 東京, 😀'),
    PromptTemplate(preamble="P", instruction_header="User:", input_header="Context:", response_header="Assistant:"),
]
RECORDS = [("Name a colour.", ""), ("Rewrite the sentence.", "The quick brown fox."), ("Classify.", "   ")]


def messages(instruction: str, input: str) -> list[dict[str, str]]:
    turn = [{"role": "user", "content": instruction}]
    return turn + ([{"role": "user", "content": input}] if input else [])


def chat_ids(tokenizer, conversation) -> list[int]:
    encoded = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


@pytest.mark.parametrize("style", ["gpt2", "llama"])
@pytest.mark.parametrize("template", TEMPLATES, ids=["alpaca", "no-preamble", "escapes", "other-headers"])
def test_apply_chat_template_gives_the_ids_sft_generates_from(style, template, request) -> None:
    tokenizer = copy.deepcopy(request.getfixturevalue(f"{style}_tokenizer"))  # the fixture is shared
    install_chat_template(tokenizer, template)
    for instruction, input in RECORDS:
        expected = encode_prompts(tokenizer, [template.render(instruction, input)])[0]
        assert chat_ids(tokenizer, messages(instruction, input)) == expected, (instruction, input)


def test_bos_is_written_only_where_the_tokenizer_adds_it(gpt2_tokenizer, llama_tokenizer) -> None:
    assert not adds_bos(gpt2_tokenizer) and adds_bos(llama_tokenizer)
    assert "bos_token" in chat_template(PromptTemplate(), True)
    assert "bos_token" not in chat_template(PromptTemplate(), False)


def test_a_conversation_renders_turn_by_turn(gpt2_tokenizer) -> None:
    gpt2_tokenizer = copy.deepcopy(gpt2_tokenizer)
    install_chat_template(gpt2_tokenizer, PromptTemplate(preamble="P"))
    eos = gpt2_tokenizer.eos_token
    conversation = [
        {"role": "system", "content": "ignored: the preamble stands for it"},
        {"role": "user", "content": "A"},
        {"role": "assistant", "content": "B"},
        {"role": "user", "content": [{"type": "text", "text": "C"}]},
        {"role": "user", "content": "D"},
    ]
    text = gpt2_tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert text == (
        f"P\n\n### Instruction:\nA\n\n### Response:\nB{eos}\n\n### Instruction:\nC\n\n### Input:\nD\n\n### Response:\n"
    )
    closed = gpt2_tokenizer.apply_chat_template(conversation[:3], tokenize=False)
    assert closed.endswith(f"### Response:\nB{eos}")  # an answer ends with the EOS training taught


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A full fine-tune, a LoRA adapter and its merge, from the tiny recipe, with a preamble of their own."""
    from pathlib import Path

    from sft.cli import main

    root = tmp_path_factory.mktemp("trained")
    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml")
    common = ["--max_steps", "1", "--eval_strategy", "no", "--prompt_preamble", "Answer with care."]
    assert main(["train", recipe, "--output_dir", str(root / "full"), *common]) == 0
    llama = ["--model_name_or_path", "sft-tiny-llama", "--method", "lora"]
    assert main(["train", recipe, "--output_dir", str(root / "lora"), *llama, *common]) == 0
    assert main(["merge", str(root / "lora"), "--output", str(root / "merged")]) == 0
    return root


@pytest.mark.parametrize("kind", ["full", "lora", "merged"])
def test_a_saved_fine_tune_prompts_the_same_through_apply_chat_template(trained, kind) -> None:
    """What another runtime sends through the saved tokenizer's chat template is what `sft generate` sends."""
    import json

    from transformers import AutoTokenizer

    from sft.inference.generate import Generator, load_for_inference

    directory = trained / kind
    generator = Generator(*load_for_inference(str(directory)))
    assert generator.template.preamble == "Answer with care."
    tokenizer = AutoTokenizer.from_pretrained(directory)  # as any runtime loads it
    for instruction, input in RECORDS:
        ids = generator.encode([{"instruction": instruction, "input": input}])[0]
        assert chat_ids(tokenizer, messages(instruction, input)) == ids, (kind, instruction, input)
    eos = json.loads((directory / "generation_config.json").read_text())["eos_token_id"]
    assert tokenizer.eos_token_id in (eos if isinstance(eos, list) else [eos])
