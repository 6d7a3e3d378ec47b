"""TwiG SFT: teacher-forced training on the 9 task instances of the pipeline's trajectories.

One optimizer step = `grad_accum` micro-batches of `batch_size` instances per process. The data
order is a pure function of (seed, epoch) and the step, so a run resumed from a checkpoint draws
exactly the batches it would have drawn, and (with accelerate's saved model, optimizer, scheduler
and RNG state) computes the same losses. The loss is each instance's mean negative log-likelihood
over its target tokens (text head for guides and reflections, image head for band tokens),
averaged over instances, so a 190-token band and a 12-token guide weigh the same.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from trainer import checkpoints
from trainer.batching import Batch, collate
from trainer.config import SFTConfig
from trainer.data import DataError, load_examples
from trainer.instances import Instance, InstanceBuilder, epoch_order, parse_mixture
from trainer.policy import LoraSpec, count_parameters, load_policy
from trainer.runlog import RunLog
from trainer.session import Session
from trainer.vq import ImageTokenizer

log = logging.getLogger("twig")


def instance_loss(logps: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss over instances, per-instance NLL): each instance's mean NLL on its targets."""
    tgt = batch.target.float()
    per = -(logps * tgt).sum(1) / tgt.sum(1).clamp(min=1)
    return per.mean(), per.detach()


class SFTRun:
    """Everything an SFT run holds; `run()` trains to `cfg.steps` and exports the final model."""

    def __init__(self, cfg: SFTConfig):
        self.cfg = cfg
        self.weights = parse_mixture(cfg.mixture)
        self.session = Session(cfg)
        self.acc = self.session.accelerator
        lora = LoraSpec(cfg.lora_rank, cfg.lora_alpha) if cfg.lora_rank > 0 else None
        self.scorer, self.loaded = load_policy(cfg.model, lora, cfg.gradient_checkpointing)
        self.tokenizer = self.loaded.tokenizer
        self.builder = InstanceBuilder(self.tokenizer, self.loaded.grid, cfg.detailed_reflections)
        self.train = self._instances("train", required=True)
        self.val = self._instances("val", required=False)
        self.pad = self.builder.special.pad
        self.session.prepare(self.scorer)
        self.step = 0
        self.epoch_cache: dict[int, list[int]] = {}

    # -- data --------------------------------------------------------------------------------
    def _instances(self, split: str, required: bool) -> list[Instance]:
        cfg = self.cfg
        try:
            examples = load_examples(cfg.data, split, cfg.limit if split == "train" else None)
        except DataError:
            if required:
                raise
            return []
        if not examples:
            if required:
                raise DataError(f"{cfg.data} has no {split} trajectories")
            return []
        cache = cfg.token_cache or (str(Path(cfg.data) / "tokens") if Path(cfg.data).is_dir()
                                    else str(Path(cfg.out) / "tokens"))
        vq = ImageTokenizer(self.loaded.model, cache)
        bar = self.session.bar(len(examples), f"image tokens ({split})")
        out: list[Instance] = []
        for e in examples:
            out += self.builder.build(e.record, vq.tokens(e))
            bar.update(1)
        bar.close()
        dropped = 0
        if cfg.max_length:
            dropped = sum(len(i) > cfg.max_length for i in out)
            out = [i for i in out if len(i) <= cfg.max_length]
        self.session.note(f"{split}: {len(examples)} trajectories -> {len(out)} instances "
                          f"({vq.hits} token files reused, {vq.encoded} images encoded"
                          + (f", {dropped} longer than {cfg.max_length} dropped" if dropped else "") + ")")
        if required and not out:
            raise DataError(f"{cfg.data}: no {split} instance left to train on")
        return out

    def order(self, position: int) -> int:
        """The instance index at a position of the endless epoch-by-epoch order."""
        n = len(self.train)
        epoch, offset = divmod(position, n)
        if epoch not in self.epoch_cache:
            self.epoch_cache = {epoch: epoch_order(self.train, self.weights, self.cfg.seed, epoch)}
        return self.epoch_cache[epoch][offset]

    def micro_batch(self, step: int, micro: int) -> Batch:
        """The batch this process trains on at (step, micro): disjoint slices across processes."""
        cfg, acc = self.cfg, self.acc
        global_micro = (step * cfg.grad_accum + micro) * acc.num_processes + acc.process_index
        start = global_micro * cfg.batch_size
        picked = [self.train[self.order(start + j)] for j in range(cfg.batch_size)]
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + global_micro)
        draws = torch.rand(len(picked), generator=gen).tolist()
        rows = []
        for inst, u in zip(picked, draws, strict=True):
            ids = self.builder.uncond(inst) if inst.task == "generate" and u < cfg.uncond_prob else inst.ids
            rows.append((ids, inst.is_img, inst.target))
        return collate(rows, self.pad, [i.task for i in picked])

    # -- learning ----------------------------------------------------------------------------
    def learn(self, batches: list[Batch]) -> dict[str, Any]:
        """One optimizer step over micro-batches; returns the step's metrics."""
        acc, scorer = self.acc, self.session.model
        scorer.train()
        losses: dict[str, list[float]] = {}
        total, n_tokens = 0.0, 0
        for i, batch in enumerate(batches):
            batch = batch.to(acc.device)
            sync = i == len(batches) - 1
            with self.session.maybe_no_sync(sync), acc.autocast():
                logps = scorer(batch.ids, batch.is_img, batch.mask, batch.target)
                loss, per = instance_loss(logps, batch)
            acc.backward(loss / len(batches))
            total += float(loss.detach()) / len(batches)
            n_tokens += batch.n_tokens
            for task, value in zip(batch.tasks, per.tolist(), strict=True):
                losses.setdefault(task, []).append(value)
        grad_norm = self.session.clip()
        self.session.optimizer.step()
        self.session.scheduler.step()
        self.session.optimizer.zero_grad(set_to_none=True)
        out = {"loss": total, "grad_norm": grad_norm, "tokens": n_tokens * acc.num_processes,
               "lr": self.session.scheduler.get_last_lr()[0]}
        out |= {f"loss_{k}": sum(v) / len(v) for k, v in sorted(losses.items())}
        return out

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Mean instance NLL on the first `val_limit` val instances (a fixed set), per family too."""
        if not self.val:
            return {}
        acc, scorer, cfg = self.acc, self.session.model, self.cfg
        scorer.eval()
        rows = self.val[: cfg.val_limit][acc.process_index:: acc.num_processes]
        per_task: dict[str, list[float]] = {}
        for i in range(0, len(rows), cfg.batch_size):
            chunk = rows[i: i + cfg.batch_size]
            batch = collate([(r.ids, r.is_img, r.target) for r in chunk], self.pad,
                            [r.task for r in chunk]).to(acc.device)
            with acc.autocast():
                _, per = instance_loss(scorer(batch.ids, batch.is_img, batch.mask, batch.target), batch)
            for task, value in zip(batch.tasks, per.tolist(), strict=True):
                per_task.setdefault(task, []).append(value)
        scorer.train()
        gathered = self.session.gather_lists(per_task)
        every = [v for vs in gathered.values() for v in vs]
        out = {"val_loss": sum(every) / len(every), "val_instances": len(every)}
        return out | {f"val_loss_{k}": sum(v) / len(v) for k, v in sorted(gathered.items())}

    # -- the loop ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"kind": "sft", "digest": self.cfg.digest(), "config": self.cfg.to_json(),
                "train_instances": len(self.train)}

    def run(self) -> Path:
        cfg, acc = self.cfg, self.acc
        self.step = self.session.resume("sft")
        params = count_parameters(self.session.unwrapped)
        runlog = RunLog(Path(cfg.out), acc.is_main_process, cfg.tensorboard, self.step)
        runlog.write({"kind": "start", "step": self.step, "train_instances": len(self.train),
                      "val_instances": len(self.val), "processes": acc.num_processes,
                      "device": str(acc.device), "mixed_precision": acc.mixed_precision, **params})
        bar = self.session.bar(cfg.steps, "sft", initial=self.step)
        t_last = time.perf_counter()
        while self.step < cfg.steps:
            batches = [self.micro_batch(self.step, m) for m in range(cfg.grad_accum)]
            metrics = self.learn(batches)
            self.step += 1
            now = time.perf_counter()
            metrics["tokens_per_s"] = metrics["tokens"] / max(now - t_last, 1e-9)
            t_last = now
            if not math.isfinite(metrics["loss"]):
                raise FloatingPointError(f"step {self.step}: the loss is {metrics['loss']}; lower --lr "
                                         "or check the data")
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                runlog.write({"kind": "train", "step": self.step, "epoch": self._epoch(), **metrics})
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}")
            if cfg.val_every and (self.step % cfg.val_every == 0 or self.step == cfg.steps) and self.val:
                runlog.write({"kind": "val", "step": self.step, **self.validate()})
            if cfg.save_every and (self.step % cfg.save_every == 0 or self.step == cfg.steps):
                checkpoints.save(acc, Path(cfg.out), self.step, self.state(), cfg.keep)
        bar.close()
        final = self.session.export(self.tokenizer, {**self.state(), "step": self.step})
        runlog.write({"kind": "done", "step": self.step, "checkpoint": str(final)})
        runlog.close()
        return final

    def _epoch(self) -> float:
        seen = self.step * self.cfg.grad_accum * self.acc.num_processes * self.cfg.batch_size
        return round(seen / len(self.train), 4)


def train_sft(cfg: SFTConfig) -> Path:
    return SFTRun(cfg).run()

