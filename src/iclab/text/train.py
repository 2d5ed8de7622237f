"""Training a causal language model on text: iclab's TokenLM (token embeddings, learned positions, tied output)
trained by iclab's own loop (train.Trainer: warm-up and decay, clipping, logging, atomic checkpoints, a stop at
a step boundary on Ctrl-C or SIGTERM, exact resume) on next-token prediction over random windows of the training
stream.

A run folder holds config.json, tokenizer.json, metrics.jsonl, checkpoints/ and, after `evaluate_run`,
perplexity.json. Runs that share a seed start from the same weights and see the same windows in the same order,
whatever their attention: fixed-eta momentum adds no parameters, and `attention: ema` draws its own after all
others.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from ..files import atomic_write_json
from ..models.transformer import TokenLM, lm_forward_flops
from ..training import distributed
from ..training.checkpoint import latest_checkpoint, load_model_weights, read_state
from ..training.flops import step_flops
from ..training.runs import RunDir, device_of, set_threads, torch_dtype
from ..training.trainer import Trainer, TrainResult, resume, train_in
from .config import TextConfig, read_text_config
from .data import TokenData, prepare_data, sample_windows, validation_windows
from .perplexity import mean_loss_at, perplexities, position_loss
from .tokenizer import save_tokenizer


def build_text_model(config: TextConfig, vocab: int) -> TokenLM:
    return TokenLM(config.model, vocab, config.context)


def next_token_loss(model: torch.nn.Module, windows: Tensor) -> Tensor:
    logits = model(windows[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))


class TextTrainer(Trainer):
    """train.Trainer with a token model, windows of text and, as its validation curve, the loss at each context
    length of eval.lengths (logged as `val_error`, nats per token). One process for now: text runs under torchrun
    are refused rather than left untested."""

    read_config = staticmethod(read_text_config)
    resume_command = "iclab text train --resume"

    def __init__(self, config: TextConfig, run_dir: Path, data: TokenData):
        self.data = data
        if distributed.context().distributed:
            raise UserError("text runs train in one process for now; start them without torchrun")
        super().__init__(config, run_dir)

    def build_model(self) -> TokenLM:
        return build_text_model(self.config, self.data.vocab)

    def validation_set(self) -> Tensor:
        return validation_windows(self.data.val, max(self.config.eval.lengths) + 1, self.config.train.eval_prompts)

    def batch_loss(self) -> Tensor:
        windows = sample_windows(self.data.train, self.config.train.batch_size, self.config.context + 1, self.generator)
        with self.autocast():
            return next_token_loss(self.forward, windows[self.rows].to(self.device))

    def step_flops(self, step: int) -> int:
        forward = lm_forward_flops(self.config.model, self.data.vocab, self.config.context)
        return step_flops(forward, self.config.train.batch_size)

    def validation_curve(self) -> list[float]:
        return mean_loss_at(position_loss(self.model, self.val), self.config.eval.lengths)

    def progress_note(self, loss: float, row: dict | None) -> str:
        return f"loss {loss:.4f} nats/token"  # the reports' perplexity is exp of it


def train_text(
    config: TextConfig,
    run_dir: str | Path,
    data: TokenData | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train a new text run in `run_dir` (an existing run is refused unless `overwrite`, and then replaced only
    once the new one has finished). `data` shares an encoded corpus between runs; by default it is prepared
    from config.corpus, training the tokenizer."""
    run_dir = Path(run_dir)
    with RunDir(run_dir, read_text_config, TextTrainer.resume_command).fresh(overwrite) as target:
        data = data or prepare_data(config.corpus)
        save_tokenizer(data.tokenizer, target / "tokenizer.json")
        result = train_in(config, target, progress, kind=TextTrainer, data=data)
    result.run_dir = run_dir
    return result


def run_data(run_dir: Path, config: TextConfig | None = None) -> TokenData:
    """The run's corpus encoded with the run's own tokenizer."""
    config = config or read_text_config(run_dir)
    return prepare_data(config.corpus, Path(run_dir) / "tokenizer.json")


def resume_text(
    run_dir: str | Path, data: TokenData | None = None, steps: int | None = None, progress: bool = True
) -> TrainResult:
    """Continue a text run from its latest checkpoint (optionally to a new total of `steps`)."""
    return resume(run_dir, progress, steps, kind=TextTrainer, data=data or run_data(Path(run_dir)))


def load_text_model(run_dir: Path, vocab: int, config: TextConfig | None = None) -> tuple[TokenLM, dict]:
    """The run's latest checkpointed model (eval mode) and that checkpoint's state."""
    config = config or read_text_config(run_dir)
    set_threads(config)
    ckpt = latest_checkpoint(run_dir)
    model = build_text_model(config, vocab)
    load_model_weights(model, ckpt)
    return model.to(device_of(config), torch_dtype(config)).eval(), read_state(ckpt)


def evaluate_run(
    run_dir: str | Path, data: TokenData | None = None, progress: bool = False, config: TextConfig | None = None
) -> dict:
    """Validation loss at every position and perplexity at eval.lengths -> RUN_DIR/perplexity.json (`config`:
    the run's, when the caller has it already)."""
    run_dir = Path(run_dir)
    config = config or read_text_config(run_dir)
    data = data or run_data(run_dir, config)
    model, state = load_text_model(run_dir, data.vocab, config)
    started = time.perf_counter()
    windows = validation_windows(data.val, max(config.eval.lengths) + 1, config.eval.windows)
    losses = position_loss(model, windows, config.eval.batch_size, progress)
    result = {
        "lengths": config.eval.lengths,
        "perplexity": perplexities(losses, config.eval.lengths),
        "loss_by_position": [round(x, 5) for x in losses.tolist()],
        "windows": len(windows),
        "tokens_scored": windows.shape[0] * (windows.shape[1] - 1),
        "steps": state["step"],
        "train_seconds": round(state["elapsed_seconds"], 1),
        "eval_seconds": round(time.perf_counter() - started, 1),
        "parameters": model.num_parameters(),
    }
    atomic_write_json(run_dir / "perplexity.json", result)
    return result
