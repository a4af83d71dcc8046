"""Generation metrics at every evaluation: what TRL's trainer cannot report during training.

With `generation_eval: true` every evaluation of the validation split also generates a response for
each validation record (or the first `generation_eval_records`) with sft's batched generator, greedy,
with the run's prompt template, scores the responses as `sft eval` does, and puts `eval_rouge_l`,
`eval_bleu`, `eval_exact_match` and `eval_ended_at_eos` into the evaluation metrics beside `eval_loss`.
They go in inside `evaluation_loop`, before `Trainer.evaluate` logs the metrics and hands them to the
callbacks, so they reach the progress line, `trainer_state.json`, TensorBoard or W&B, `metrics.json`,
`metric_for_best_model` (the best checkpoint) and early stopping like the loss does.

The figures are those `sft eval` prints for the model at that step on the same records with the same
token budget: the same batches (planned once over all the records, as `sft eval` plans them), the
weights in their own precision (fp32 master weights: the bf16 autocast training may run under is set
aside while generating), and the random state of training left as it was, so a run with generation_eval
trains exactly as one without.

Several processes: the batches are dealt out in turn to the processes, each generates its share, the
responses are gathered on every process (`gather_object`), the main process scores them and sends the
figures to the others (`broadcast_object_list`). Generating on the main process alone would leave the
others idle for the longest part of an evaluation, and waiting on a collective operation for that long
can run into the process group's timeout. Every batch is generated as a single process would generate it
(the same rows, the same padding), so the figures do not depend on the number of processes. Scoring
runs once, on one process, so the metric modules are loaded into sft's cache by one process at a time.

With `generation_eval_judge_endpoint` and `generation_eval_judge_model`, the main process also has an LLM
judge (sft.evaluation.judge) grade every response from 0 to 100 and adds `eval_judge`, the mean over the
records it scored, to the figures it sends out. Its answers are cached in judge_cache.jsonl in output_dir,
keyed by the judge model, the rubric and the record's texts with the response, so a record answered the same
way at a later evaluation (or in a rerun) is not asked again. Where the judge scores no record, or its server
fails, `eval_judge` is left out of that evaluation with one warning; a run that chose eval_judge as
metric_for_best_model stops instead, since the best checkpoint cannot be chosen without it.
"""

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sft.data.template import PromptTemplate
from sft.errors import SFTError
from sft.inference.settings import GenerationSettings
from sft.paths import JUDGE_CACHE_FILE
from sft.training.loss import LeanLossSFTTrainer

logger = logging.getLogger(__name__)


class GenerationEval:
    """The validation records to generate for, and how: planned once, when training starts."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        records: Sequence[Mapping[str, Any]],
        template: PromptTemplate,
        max_new_tokens: int,
    ) -> None:
        from sft.inference.generate import Generator, plan_batches

        if not records:
            raise SFTError("generation_eval: there are no validation records to generate for")
        self.records = list(records)
        self.tokenizer = tokenizer
        self.template = template
        # Greedy, and `sft eval`'s batch size, so the batches are the ones `sft eval` would generate.
        self.settings = GenerationSettings(max_new_tokens=max_new_tokens)
        generator = Generator(model, tokenizer, template)
        prompt_ids = generator.encode(self.records)
        # A prompt that leaves no room for a response is an error now, not at the first evaluation.
        rooms = generator.rooms(prompt_ids, max_new_tokens)
        self.batches = plan_batches(prompt_ids, rooms, self.settings.batch_size)

    def generate(self, model: Any, rank: int = 0, processes: int = 1) -> list[tuple[int, Any]]:
        """(record index, GenerationResult) for this process's share of the batches: every `processes`-th
        batch from the `rank`-th. Each batch goes to `generate_responses` whole, so it is generated exactly
        as it would be in one call over all the records (one batch, the same rows in the same order)."""
        from sft.inference.generate import generate_responses

        results = []
        for batch in self.batches[rank::processes]:
            records = [self.records[index] for index in batch]
            responses = generate_responses(model, self.tokenizer, records, self.settings, self.template, progress=False)
            results.extend(zip(batch, responses))
        return results

    def ordered(self, results: Sequence[tuple[int, Any]]) -> list[Any]:
        """The GenerationResults in record order, one per record."""
        ordered = [result for _, result in sorted(results, key=lambda pair: pair[0])]
        if len(ordered) != len(self.records):
            raise RuntimeError(f"generation_eval: {len(ordered)} responses for {len(self.records)} records")
        return ordered

    def score(self, results: Sequence[tuple[int, Any]]) -> dict[str, float]:
        """ROUGE-L, BLEU, exact match and the share ended at EOS, as `sft eval` computes them."""
        from sft.evaluation.metrics import score_responses

        ordered = self.ordered(results)
        scores = score_responses([r.text for r in ordered], [str(record["output"]) for record in self.records])
        return {
            "rouge_l": float(scores["rouge_l"]),
            "bleu": float(scores["bleu"]),
            "exact_match": float(scores["exact_match"]),
            "ended_at_eos": sum(r.ended_at_eos for r in ordered) / len(ordered),
        }

    def judge(self, results: Sequence[tuple[int, Any]], settings: Any, cache_path: Path) -> tuple[float | None, int]:
        """The judge's mean score (0-100) over the records it scored, None where it scored none, and how many
        it scored. Answers come from, and go to, the cache at `cache_path`."""
        from sft.evaluation.judge import judge_records

        texts = [result.text for result in self.ordered(results)]
        judgements = judge_records(self.records, texts, settings, cache_path, progress=False)
        scores = [float(j.score) for j in judgements if j.scored and j.score is not None]
        return (sum(scores) / len(scores) if scores else None), len(scores)


@contextlib.contextmanager
def plain_forward(model: Any) -> Iterator[None]:
    """The model's forward without the mixed-precision wrapper Accelerate puts on it, put back afterwards:
    responses come from the weights as they are saved, as `sft eval` reads them."""
    wrapped = model.__dict__.get("forward")
    original = model.__dict__.get("_original_forward")
    if wrapped is None or original is None:
        yield
        return
    model.forward = original
    try:
        yield
    finally:
        model.forward = wrapped


@contextlib.contextmanager
def training_random_state(model: Any) -> Iterator[None]:
    """`generate_responses` seeds torch; the random state training goes on with is restored afterwards."""
    import torch

    device = next(model.parameters()).device
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        yield


class GenerationEvalMixin:
    """Adds the generation metrics to every evaluation of the trainer's own validation set.

    Put before the trainer class: `class T(GenerationEvalMixin, LeanLossSFTTrainer)`."""

    def __init__(self, *args: Any, generation_eval: GenerationEval | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.generation_eval = generation_eval
        self._generate_in_this_evaluation = False
        # The LLM judge of the responses, where the recipe names one (checked when the recipe was read).
        self.judge_settings = None
        if generation_eval is not None and getattr(self.args, "generation_eval_judge_endpoint", None):
            from sft.training.config import judge_settings

            self.judge_settings = judge_settings(self.args)
        deepspeed = getattr(self.accelerator.state, "deepspeed_plugin", None)
        sharded = self.is_fsdp_enabled or (self.is_deepspeed_enabled and getattr(deepspeed, "zero_stage", 0) == 3)
        if generation_eval is not None and sharded and self.accelerator.num_processes > 1:
            # Sharded weights are gathered inside every forward, so every process would have to run the same
            # forwards; with each generating its own records they do not, and the run would hang.
            raise SFTError(
                "generation_eval does not run under FSDP or DeepSpeed ZeRO-3 yet; use data parallel "
                "(recipes/accelerate/ddp.yaml) or set generation_eval false and run `sft eval` on checkpoints"
            )

    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> Any:
        # Only the run's own validation set: the records generated for are its records.
        self._generate_in_this_evaluation = self.generation_eval is not None and eval_dataset is None
        try:
            return super().evaluate(
                eval_dataset=eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix
            )
        finally:
            self._generate_in_this_evaluation = False

    def evaluation_loop(
        self,
        dataloader: Any,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> Any:
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if self._generate_in_this_evaluation:
            self._generate_in_this_evaluation = False  # once per evaluation
            figures = self.generation_metrics()
            output.metrics.update({f"{metric_key_prefix}_{name}": value for name, value in figures.items()})
        return output

    def generation_metrics(self) -> dict[str, float]:
        """Every process generates its share of the batches; all end with the same figures."""
        from accelerate.utils import broadcast_object_list, gather_object

        job = self.generation_eval
        accelerator = self.accelerator
        processes, rank = accelerator.num_processes, accelerator.process_index
        model = accelerator.unwrap_model(self.model)  # not DDP's wrapper; a PEFT model stays whole
        started = time.perf_counter()
        with training_random_state(model), plain_forward(model):
            results = job.generate(model, rank, processes)
        if processes > 1:
            results = gather_object(results)
        # The figures, and a message where the run must stop: every process raises it, none is left waiting.
        outcome: list[Any] = [None, None]
        if accelerator.is_main_process:
            figures = job.score(results)
            try:
                figures.update(self.judge_figures(results))
            except SFTError as error:
                outcome[1] = str(error)
            outcome[0] = figures
        if processes > 1:
            broadcast_object_list(outcome, from_process=0)
        if outcome[1] is not None:
            raise SFTError(outcome[1])
        logger.debug("Generated %d validation responses in %.1f s", len(job.records), time.perf_counter() - started)
        assert outcome[0] is not None
        return outcome[0]

    def judge_figures(self, results: Sequence[tuple[int, Any]]) -> dict[str, float]:
        """`judge`: the judge's mean score, where a judge is set and scored some record. Where it scored none or
        its server failed, nothing, with one warning; an SFTError where eval_judge chooses the best model."""
        if self.judge_settings is None:
            return {}
        cache = Path(self.args.output_dir) / JUDGE_CACHE_FILE
        needed = self.args.metric_for_best_model == "eval_judge"
        try:
            mean, scored = self.generation_eval.judge(results, self.judge_settings, cache)
        except SFTError as error:
            if needed:
                raise
            logger.warning("eval_judge left out of this evaluation: %s", error)
            return {}
        if mean is None:
            why = f"the judge scored none of the {len(self.generation_eval.records)} responses"
            if needed:
                raise SFTError(f"metric_for_best_model is eval_judge, but {why}; see {cache} for its replies")
            logger.warning("eval_judge left out of this evaluation: %s (its replies are in %s)", why, cache)
            return {}
        return {"judge": mean}


class GenerationEvalSFTTrainer(GenerationEvalMixin, LeanLossSFTTrainer):
    """sft's trainer with generation metrics at every evaluation."""
