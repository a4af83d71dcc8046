"""The Alpaca prompt, rendered by one function for training and inference alike."""

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from sft.errors import SFTError
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
                return cls.load(path)
        return cls()

    @classmethod
    def load(cls, path: Path) -> "PromptTemplate":
        """The template saved at `path`; a file that is not one (a hand edit, a bad copy) is refused in one
        line, since rendering prompts another way than training did would quietly degrade every response."""
        keys = [field.name for field in fields(cls)]
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:  # not JSON, or not UTF-8
            problem = f"not JSON: {error}"
        else:
            problem = template_problem(data, keys)
        if problem:
            raise SFTError(
                f"{path} is not a valid prompt template ({problem}); it needs the string keys {', '.join(keys)}: "
                "restore it from the training run that wrote it"
            )
        return cls(**data)


def template_problem(data: object, keys: list[str]) -> str | None:
    """What is wrong with a loaded template file's content, or None."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    unknown = sorted(set(data) - set(keys))
    missing = [key for key in keys if key not in data]
    not_text = [key for key in keys if key in data and not isinstance(data[key], str)]
    if unknown:
        return f"unknown key {', '.join(map(str, unknown))}"
    if missing:
        return f"missing {', '.join(missing)}"
    if not_text:
        return f"{', '.join(not_text)} not a string"
    return None
