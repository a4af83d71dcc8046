"""Preference pairs from a fine-tune's own answers, in the layout TRL's DPOTrainer takes.

Each pair holds the `prompt` exactly as the model was trained on it (its saved template), a `chosen` and a
`rejected` response, and the source record's instruction, input and output beside them.

- `self` (works offline): the reference answer is chosen and the model's own answer rejected, where they
  differ. With one sample the answer is greedy; with K samples it is the worst of them by ROUGE-L against
  the reference. A record the model already answers exactly (every sample) gives no pair, and is counted;
  so does one with only empty answers (a pair needs text on both sides).
- `judge`: K sampled answers graded by an LLM judge (sft.evaluation.judge); the best is chosen and the worst
  rejected. A record whose answers all get the same grade, or that the judge could not grade twice, gives no
  pair, and is counted.
"""

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sft.errors import SFTError

SOURCES = ("self", "judge")


@dataclass(frozen=True)
class PairSettings:
    source: str = "self"
    samples: int = 1  # answers per record; above 1 they are sampled at `temperature`
    temperature: float = 1.0
    max_new_tokens: int = 256
    batch_size: int = 32
    seed: int = 0

    def check(self) -> None:
        if self.source not in SOURCES:
            raise SFTError(f"--source must be one of {', '.join(SOURCES)}, not {self.source!r}")
        if self.samples < 1:
            raise SFTError(f"--samples must be 1 or more, got {self.samples}")
        if self.source == "judge" and self.samples < 2:
            raise SFTError("--source judge ranks several answers per record; give --samples 2 or more (4 is typical)")
        if self.samples > 1 and not self.temperature > 0:
            raise SFTError(
                f"--samples {self.samples} draws different answers by sampling; give --temperature above 0 "
                f"(got {self.temperature}), or --samples 1 for the greedy answer"
            )


@dataclass
class PairStats:
    records: int = 0
    pairs: int = 0
    already_exact: int = 0  # self: records the model answers exactly as the reference
    no_answer: int = 0  # records with no non-empty answer: a pair needs text on both sides
    no_preference: int = 0  # judge: records whose answers the judge graded alike, or could not grade
    sample_settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        skipped = []
        if self.already_exact:
            skipped.append(f"{self.already_exact} already answered exactly")
        if self.no_answer:
            skipped.append(f"{self.no_answer} with only empty answers")
        if self.no_preference:
            skipped.append(f"{self.no_preference} with no preference between answers")
        return f"{self.pairs} pairs from {self.records} records" + (f" ({'; '.join(skipped)})" if skipped else "")


def sample_answers(
    model: Any,
    tokenizer: Any,
    records: Sequence[Mapping[str, Any]],
    settings: PairSettings,
    template: Any,
    progress: bool = True,
) -> list[list[str]]:
    """`settings.samples` answers per record, in record order: greedy for one, sampled (seed, seed + 1, ...)
    for more, so that the same settings give the same pairs."""
    from sft.inference.generate import generate_responses
    from sft.inference.settings import GenerationSettings

    answers: list[list[str]] = [[] for _ in records]
    for k in range(settings.samples):
        sampled = settings.samples > 1
        generation = GenerationSettings(
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature if sampled else 0.0,
            batch_size=settings.batch_size,
            seed=settings.seed + k,
        )
        for row, result in zip(answers, generate_responses(model, tokenizer, records, generation, template, progress)):
            row.append(result.text)
    return answers


def self_pairs(
    records: Sequence[Mapping[str, Any]], answers: Sequence[Sequence[str]], stats: PairStats
) -> list[tuple[int, str, str]]:
    """(record index, chosen, rejected): the reference against the model's worst answer by ROUGE-L."""
    from sft.evaluation.metrics import score_responses

    flat = [answer for row in answers for answer in row]
    references = [str(records[i]["output"]) for i, row in enumerate(answers) for _ in row]
    scores = score_responses(flat, references)["per_record"]
    chosen: list[tuple[int, str, str]] = []
    position = 0
    for index, row in enumerate(answers):
        rouge = [scores[position + k]["rouge_l"] for k in range(len(row))]
        position += len(row)
        reference = str(records[index]["output"])
        # An empty answer cannot be a pair's side (`sft data check` refuses it): the worst non-empty one is.
        answered = [k for k in range(len(row)) if row[k].strip()]
        if not answered:
            stats.no_answer += 1
            continue
        worst = min(answered, key=lambda k: (rouge[k], k))
        if row[worst].strip() == reference.strip():
            stats.already_exact += 1
            continue
        chosen.append((index, reference, row[worst]))
    return chosen


def judge_pairs(
    records: Sequence[Mapping[str, Any]],
    answers: Sequence[Sequence[str]],
    judge: Any,
    cache_path: Any,
    stats: PairStats,
    progress: bool = True,
) -> list[tuple[int, str, str]]:
    """(record index, chosen, rejected): the judge's best and worst graded answer of each record."""
    from sft.evaluation.judge import judge_records

    # Empty answers cannot be a pair's side, so they are not sent.
    asked = [(i, k) for i, row in enumerate(answers) for k, answer in enumerate(row) if answer.strip()]
    judgements = judge_records(
        [records[i] for i, _ in asked],
        [answers[i][k] for i, k in asked],
        judge,
        cache_path=cache_path,
        progress=progress,
    )
    scores: dict[int, list[tuple[int, int]]] = {}
    for (index, k), judgement in zip(asked, judgements):
        if judgement.score is not None:
            scores.setdefault(index, []).append((judgement.score, k))
    chosen: list[tuple[int, str, str]] = []
    for index, row in enumerate(answers):
        if not any(answer.strip() for answer in row):
            stats.no_answer += 1
            continue
        graded = scores.get(index, [])
        if len({row[k].strip() for _, k in graded}) < 2 or max(graded)[0] == min(graded)[0]:
            stats.no_preference += 1  # fewer than two different graded answers, or all graded alike
            continue
        best = max(graded, key=lambda item: (item[0], -item[1]))[1]
        worst = min(graded, key=lambda item: (item[0], item[1]))[1]
        chosen.append((index, row[best], row[worst]))
    return chosen


def build_pairs(
    model: Any,
    tokenizer: Any,
    template: Any,
    records: Sequence[Mapping[str, Any]],
    settings: PairSettings,
    judge: Any = None,
    judge_cache: Any = None,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], PairStats]:
    """Preference records for `records` (instruction, input, output) as the module text says."""
    settings.check()
    stats = PairStats(records=len(records), sample_settings=asdict(settings))
    answers = sample_answers(model, tokenizer, records, settings, template, progress)
    if settings.source == "judge":
        if judge is None:
            raise SFTError("--source judge needs --judge-endpoint and --judge-model")
        picked = judge_pairs(records, answers, judge, judge_cache, stats, progress)
    else:
        picked = self_pairs(records, answers, stats)
    pairs = []
    for index, chosen, rejected in picked:
        record = records[index]
        instruction, input_text = str(record["instruction"]), str(record.get("input") or "")
        pairs.append(
            {
                "prompt": template.render(instruction, input_text),
                "chosen": chosen,
                "rejected": rejected,
                "instruction": instruction,
                "input": input_text,
                "output": str(record["output"]),
            }
        )
    stats.pairs = len(pairs)
    return pairs, stats
