"""LoRA students of the generative base, trained with Unsloth and TRL's SFTTrainer.

Unsloth runs on CUDA, or falls back to its CPU backend (stock transformers + PEFT) where
there is no GPU. The loss covers the answer only: the prompt is the rendered chat prompt,
the completion the answer plus the template's end-of-turn text, so the student learns to
stop where llama.cpp stops generating.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stillroom.errors import TaskError
from stillroom.paths import private_dir
from stillroom.service.bases import end_of_turn, render_prompt
from stillroom.trainers.base_model import quiet_offline_env

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"

Progress = Callable[[str], None]


@dataclass
class LoraSettings:
    """Hyperparameters of one LoRA run; the defaults suit a 135M base and short answers."""

    # Measured on us_address_parsing, 300 examples (BENCHMARKS.md, 2026-12-01): 3 epochs at
    # 5e-4 with rank 8 got 12.5% of records exact; 5 epochs at 1e-3 with rank 16 got 25%.
    # On 12 held-out first-names answers, 24 steps at 2e-4 got 7 right, at 5e-4 all 12.
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ALL_LINEAR
    epochs: float = 5.0
    learning_rate: float = 1e-3
    batch_size: int = 4
    max_seq_length: int = 512
    seed: int = 0
    # A small set still gets this many optimizer steps (more epochs over it).
    min_steps: int = 60
    max_steps: int | None = None  # overrides epochs and min_steps
    max_seconds: float | None = None  # training stops after the step that passes it


@dataclass(frozen=True)
class LoraResult:
    """What a run did, for the version's metrics."""

    adapter_dir: Path
    seconds: float
    steps: int
    examples: int
    final_loss: float
    mean_loss: float
    device: str  # "cuda" or "cpu"


def import_unsloth() -> Any:
    """Unsloth patches transformers, TRL and PEFT as it loads: import it before them."""
    quiet_offline_env()
    # Unsloth fetches usage statistics from the Hub unless told not to.
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    import unsloth

    return unsloth


def train_lora(
    base_folder: Path,
    examples: Sequence[tuple[str, str, str]],
    out_dir: Path,
    settings: LoraSettings,
    template: str,
    progress: Progress | None = None,
) -> LoraResult:
    """Train a LoRA on (instruction, input, output) triples; writes a PEFT adapter to out_dir."""
    if not examples:
        raise TaskError("no examples to train a LoRA on")
    # Unsloth first; it patches the SFTTrainer that trl's top level (lazily) exports.
    import_unsloth()
    import torch
    from datasets import Dataset, disable_progress_bars
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]
    from unsloth import FastLanguageModel, is_bfloat16_supported

    cuda = torch.cuda.is_available()
    # float32 on CPU: bf16 there is emulated on most chips, and Unsloth would pick it wherever
    # the CPU merely supports it. On CUDA, None lets Unsloth choose bf16 or fp16.
    model, tokenizer = FastLanguageModel.from_pretrained(
        str(base_folder),
        max_seq_length=settings.max_seq_length,
        dtype=None if cuda else torch.float32,
        load_in_4bit=False,
        local_files_only=True,
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
        # Recomputing activations saves GPU memory; on CPU it only costs time.
        use_gradient_checkpointing="unsloth" if cuda else False,
        random_state=settings.seed,
    )
    end = end_of_turn(template, tokenizer.eos_token or "")
    rows = [
        {"prompt": render_prompt(template, instruction, text), "completion": output + end}
        for instruction, text, output in examples
    ]
    bf16 = cuda and bool(is_bfloat16_supported())
    disable_progress_bars()  # datasets' per-map bars
    with tempfile.TemporaryDirectory(prefix="stillroom-lora-") as scratch:
        config = SFTConfig(
            output_dir=scratch,
            max_steps=planned_steps(len(rows), settings),
            per_device_train_batch_size=settings.batch_size,
            gradient_accumulation_steps=1,
            learning_rate=settings.learning_rate,
            lr_scheduler_type="linear",
            warmup_steps=0,
            weight_decay=0.0,
            max_length=settings.max_seq_length,
            completion_only_loss=True,
            packing=False,
            bf16=bf16,
            fp16=cuda and not bf16,
            seed=settings.seed,
            data_seed=settings.seed,
            logging_strategy="steps",
            logging_steps=1,
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataset_num_proc=None,
        )
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[_Watch(settings.max_seconds, progress)],
        )
        trainer.remove_callback(PrinterCallback)  # losses go to `progress`, not stdout
        started = time.monotonic()
        output = trainer.train()
        seconds = time.monotonic() - started
    losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
    private_dir(out_dir)
    model.save_pretrained(str(out_dir))
    # PEFT also writes a model card naming the local cache path; the adapter needs none.
    (out_dir / "README.md").unlink(missing_ok=True)
    return LoraResult(
        adapter_dir=out_dir,
        seconds=seconds,
        steps=int(trainer.state.global_step),
        examples=len(rows),
        final_loss=losses[-1] if losses else math.nan,
        mean_loss=float(output.training_loss),
        device="cuda" if cuda else "cpu",
    )


def planned_steps(examples: int, settings: LoraSettings) -> int:
    """Optimizer steps for a run: the epochs over the data, but never fewer than min_steps."""
    if settings.max_steps is not None:
        return settings.max_steps
    per_epoch = math.ceil(examples / settings.batch_size)
    return max(settings.min_steps, math.ceil(settings.epochs * per_epoch))


def _Watch(max_seconds: float | None, progress: Progress | None) -> Any:
    """A trainer callback: reports each step's loss and stops once the time budget is spent."""
    from transformers import TrainerCallback

    class Watch(TrainerCallback):
        def __init__(self) -> None:
            self.started = time.monotonic()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.monotonic()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if max_seconds is not None and time.monotonic() - self.started > max_seconds:
                control.should_training_stop = True

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if progress is not None and logs and "loss" in logs:
                progress(
                    f"training the LoRA: step {state.global_step}/{state.max_steps}, "
                    f"loss {float(logs['loss']):.3f}"
                )

    return Watch()
