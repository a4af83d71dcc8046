"""The Alpaca prompt, rendered by one function for training and inference alike."""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from sft.paths import TEMPLATE_FILE

DEFAULT_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)


@dataclass(frozen=True)
class PromptTemplate:
    """Alpaca layout: preamble, `### Instruction:`, `### Input:` (only with input), `### Response:`."""

    preamble: str = DEFAULT_PREAMBLE
    instruction_header: str = "### Instruction:"
    input_header: str = "### Input:"
    response_header: str = "### Response:"

    def render(self, instruction: str, input: str = "") -> str:
        """The prompt for one record; the model continues it with the response."""
        sections = [self.preamble] if self.preamble else []
        sections.append(f"{self.instruction_header}\n{instruction}")
        if input and input.strip():
            sections.append(f"{self.input_header}\n{input}")
        sections.append(f"{self.response_header}\n")
        return "\n\n".join(sections)

    @classmethod
    def with_preamble(cls, preamble: str | None) -> "PromptTemplate":
        """The Alpaca layout with a recipe's `prompt_preamble`: None keeps the default sentence, "" drops it."""
        return cls() if preamble is None else cls(preamble=preamble)

    def save(self, directory: str | Path) -> None:
        """Saved beside every trained model so that inference renders prompts exactly as training did."""
        from sft.paths import atomic_write_json

        atomic_write_json(Path(directory) / TEMPLATE_FILE, asdict(self))

    @classmethod
    def for_model(cls, model_dir: str | Path | None) -> "PromptTemplate":
        """The template a model was trained with, or the default where none was saved."""
        if model_dir is not None:
            path = Path(model_dir) / TEMPLATE_FILE
            if path.is_file():
                return cls(**json.loads(path.read_text(encoding="utf-8")))
        return cls()
