"""The README.md model card for a trained model or adapter: what it is, how it was made, how to load it."""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sft.data.split import INSTRUCTION_DATA_KEY
from sft.data.template import PromptTemplate
from sft.evaluation.metrics import FIGURES, Figure
from sft.evaluation.report import markdown_table
from sft.models.load import OFFLINE_DEFAULT, TINY_MODELS, adapter_base
from sft.paths import ADAPTER_CONFIG, EVAL_METRICS_FILE, LOSS_PLOT, METRICS_FILE, RECIPE_FILE, TEMPLATE_FILE
from sft.preference import DPO_FIGURES

# The offline default is the GGUF release of this model, dequantized; on the Hub it is this repository.
OFFLINE_DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# Recipe keys worth a line in the card, in this order; the whole recipe is uploaded beside it.
RECIPE_SUMMARY = (
    "method",
    "dataset_format",
    "max_train_records",
    "num_train_epochs",
    "max_steps",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_ratio",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "padding_free",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_target_modules",
    "num_virtual_tokens",
    "seed",
)
# Figures of the training metrics.json shown in the card.
TRAINING_FIGURES = (
    Figure("train_loss", "training loss", "{:.4f}"),
    Figure("eval_loss", "validation loss", "{:.4f}"),
    Figure("epoch", "epochs", "{:g}"),
    Figure("train_records", "training records", "{:,}"),
    Figure("validation_records", "validation records", "{:,}"),
    Figure("tokens_seen", "tokens seen", "{:,}"),
    Figure("train_runtime", "training time (s)", "{:,.1f}"),
    Figure("train_tokens_per_second", "tokens per second", "{:,.0f}"),
    # A DPO run's: on its training pairs, and on its validation pairs.
    *DPO_FIGURES,
    *(Figure(f"eval_{figure.key}", f"{figure.label}, validation pairs", figure.format) for figure in DPO_FIGURES),
)
METHOD_NAMES = {"full": "full fine-tune", "lora": "LoRA", "qlora": "QLoRA", "prompt_tuning": "prompt tuning"}
EXAMPLE_INSTRUCTION = "Rewrite the sentence in passive voice."
EXAMPLE_INPUT = "The chef cooks the meal."


def hub_base_id(base: str | None) -> str | None:
    """The Hub id of a base model named by path or id, or None where it has none (local or test models)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not base:
        return None
    name = Path(base).name.lower()
    if name == OFFLINE_DEFAULT:
        return OFFLINE_DEFAULT_HUB_ID
    if name in TINY_MODELS or base.startswith((".", "/", "~")) or Path(base).expanduser().exists():
        return None
    try:
        validate_repo_id(base)
    except HFValidationError:
        return None
    return base


def read_optional_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_recipe(model_dir: Path) -> dict[str, Any]:
    import yaml

    path = model_dir / RECIPE_FILE
    recipe = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    return recipe if isinstance(recipe, dict) else {}


def figures(metrics: dict[str, Any], shown: Sequence[Figure]) -> list[tuple[str, str]]:
    """(label, value) of each figure that `metrics` holds as a number."""
    return [
        (figure.label, figure.show(metrics[figure.key]))
        for figure in shown
        if isinstance(metrics.get(figure.key), (int, float)) and not isinstance(metrics.get(figure.key), bool)
    ]


def python_string(text: str) -> str:
    """A Python literal for `text`, triple-quoted where that reads better and stays exact."""
    if "\n" in text and '"""' not in text and "\\" not in text and not text.endswith('"'):
        return f'"""{text}"""'
    return repr(text)


def render_model_card(model_dir: str | Path, repo_id: str) -> str:
    """Markdown with YAML metadata for the model or adapter in `model_dir`, to be published as `repo_id`."""
    from huggingface_hub import ModelCardData

    model_dir = Path(model_dir)
    is_adapter = (model_dir / ADAPTER_CONFIG).is_file()
    recipe = read_recipe(model_dir)
    base = adapter_base(model_dir) if is_adapter else recipe.get("model_name_or_path")
    base_id = hub_base_id(base)
    method = str(recipe.get("method") or ("lora" if is_adapter else "full"))
    dpo = recipe.get("stage") == "dpo"
    metadata = ModelCardData(
        base_model=base_id,
        library_name="peft" if is_adapter else "transformers",
        pipeline_tag="text-generation",
        tags=[
            "sft",
            "instruction-tuning",
            "alpaca",
            *(["lora"] if "lora" in method else []),
            *(["dpo"] if dpo else []),
        ],
    )
    what = f"A {METHOD_NAMES.get(method, method)} adapter" if is_adapter else "A causal language model"
    if not is_adapter and method in ("lora", "qlora"):
        what += f" (a {METHOD_NAMES[method]} adapter merged into its base)"
    base_text = f"[{base_id}](https://huggingface.co/{base_id})" if base_id else f"`{base or 'unknown'}`"
    lines = [
        "---",
        metadata.to_yaml(),
        "---",
        "",
        f"# {repo_id.split('/')[-1]}",
        "",
        f"{what} fine-tuned from {base_text} to follow Alpaca-style instructions, "
        + (
            f"preference-tuned with DPO (beta {recipe.get('beta', 0.1)}) on pairs of a chosen and a rejected "
            "answer, the frozen SFT model as reference, using `sft`."
            if dpo
            else "trained with supervised fine-tuning (loss on the response tokens only) using `sft`."
        ),
        "",
    ]
    if base and Path(base).name.lower() == OFFLINE_DEFAULT:
        lines += [
            f"The base weights were those of the Q4_1 GGUF release of {OFFLINE_DEFAULT_HUB_ID}, dequantized to "
            f"full precision (`sft`'s offline default `{OFFLINE_DEFAULT}`); they differ slightly from the "
            "original weights.",
            "",
        ]
    summary = {"base model": base_id or base or "unknown", "data": recipe.get("dataset_name") or "unknown"}
    if dpo:
        instruction_data = recipe.get(INSTRUCTION_DATA_KEY) or {}
        summary = {"SFT model": base or "unknown", "preference pairs": summary["data"]}
        summary["instruction data"] = instruction_data.get("dataset_name") or "unknown"
    summary.update({key: recipe[key] for key in RECIPE_SUMMARY if recipe.get(key) is not None})
    settings = [(key, f"`{value}`") for key, value in summary.items()]
    lines += ["## Training", "", markdown_table(("setting", "value"), settings)]
    if (model_dir / RECIPE_FILE).is_file():
        lines += ["", f"The complete recipe is in [`{RECIPE_FILE}`]({RECIPE_FILE})."]
    lines += ["", *results(model_dir), *usage(model_dir, repo_id, is_adapter)]
    return "\n".join(lines).rstrip() + "\n"


def results(model_dir: Path) -> list[str]:
    """Training figures, evaluation scores (from eval/metrics.json, else metrics.json) and the loss plot."""
    metrics = read_optional_json(model_dir / METRICS_FILE)
    evaluation = read_optional_json(model_dir / EVAL_METRICS_FILE) or metrics
    training, scores = figures(metrics, TRAINING_FIGURES), figures(evaluation, FIGURES)
    plot = (model_dir / LOSS_PLOT).is_file()
    if not (training or scores or plot):
        return []
    lines = ["## Results", ""]
    if training:
        lines += [markdown_table(("training", "value"), training), ""]
    if scores:
        where = [f"`{evaluation[key]}`" for key in ("split", "data") if evaluation.get(key)]
        held_out = f" ({' of '.join(where)}, {evaluation['n']} records)" if where and evaluation.get("n") else ""
        lines += [f"Generated responses scored against the reference outputs of held-out records{held_out}:", ""]
        lines += [markdown_table(("metric", "score"), scores), ""]
    if plot:
        lines += [f"![Training and validation loss]({LOSS_PLOT})", ""]
    return lines


def usage(model_dir: Path, repo_id: str, is_adapter: bool) -> list[str]:
    template = PromptTemplate.for_model(model_dir)
    saved_template = (model_dir / TEMPLATE_FILE).is_file()
    prompt = template.render(EXAMPLE_INSTRUCTION, EXAMPLE_INPUT)
    if is_adapter:
        loader = [
            "from peft import AutoPeftModelForCausalLM",
            "from transformers import AutoTokenizer",
            "",
            f'model = AutoPeftModelForCausalLM.from_pretrained("{repo_id}")',
        ]
    else:
        loader = [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
        ]
    code = [
        *loader,
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
        "",
        f"prompt = {python_string(prompt)}",
        'inputs = tokenizer(prompt, return_tensors="pt")',
        "output = model.generate(**inputs, max_new_tokens=128, do_sample=False)",
        'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
    ]
    local = repo_id.split("/")[-1]
    lines = [
        "## Prompt format",
        "",
        f"Prompts follow the Alpaca layout the model was trained on (the `{template.input_header}` section only "
        f"when there is an input); the model writes the response after `{template.response_header}`."
        + (f" The exact template is in [`{TEMPLATE_FILE}`]({TEMPLATE_FILE})." if saved_template else ""),
        "",
        "```text",
        prompt,
        "```",
        "",
        "## Usage",
        "",
        "With transformers" + (" and peft:" if is_adapter else ":"),
        "",
        "```python",
        *code,
        "```",
        "",
    ]
    if is_adapter:
        lines += ["`model.merge_and_unload()` folds the adapter into the base weights for faster inference.", ""]
    lines += [
        "With `sft`, which renders prompts the same way:",
        "",
        "```bash",
        f"sft download {repo_id} --output {local}",
        f"sft chat {local}",
        *([f"sft merge {local} --output {local}-merged  # a standalone model"] if is_adapter else []),
        "```",
    ]
    return lines
