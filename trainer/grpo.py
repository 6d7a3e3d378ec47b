"""TwiG-GRPO: group-relative policy optimization over whole think-while-generating trajectories.

One step: `prompts_per_step` prompts, G rollouts each, drawn by the generator's own sampler
(`generator.sampler.TwigSampler`: think, draw with CFG, reflect, redraw a band it scores low).
Every rollout gets one reward from the ensemble (each plug-in z-normalized within the group, then
averaged), and an advantage (r - mean) / (std + 1e-4) within its group. The loss is PPO's clipped
ratio plus beta times the k3 KL estimate to the reference, on every token the model wrote (guides,
band tokens, reflections: all passes are trained), averaged per rollout then over rollouts.
Behaviour log-probs are the teacher-forced ones of the policy at rollout time (the sampler's
stream is replayed through `sequence_logps`), so with one inner step the ratio starts at exactly 1.
The reference is the policy with its LoRA adapters disabled, or a frozen copy of the starting
weights for a full fine-tune.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from generator.choice import Sampling
from generator.prompts import read_prompts
from generator.sampler import Request, Trajectory, TwigSampler, TwigSettings
from trainer import checkpoints
from trainer.batching import Batch
from trainer.config import GRPOConfig
from trainer.data import load_examples
from trainer.policy import LoraSpec, count_parameters, load_policy
from trainer.rewards import Ensemble, build, group_advantages
from trainer.rewards.base import Sample
from trainer.runlog import RunLog
from trainer.session import Session

log = logging.getLogger("twig")


def grpo_loss(logps: torch.Tensor, old: torch.Tensor, ref: torch.Tensor, adv: torch.Tensor,
              target: torch.Tensor, beta: float, eps: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate + beta * k3 KL, masked to `target`, mean per rollout then over rollouts."""
    m = target.float()
    ratio = torch.exp(logps - old)
    a = adv[:, None]
    pg = -torch.min(ratio * a, ratio.clamp(1 - eps, 1 + eps) * a)
    diff = ref - logps
    kl = torch.exp(diff) - diff - 1
    per_token = pg + beta * kl
    denom = m.sum(1).clamp(min=1)
    loss = ((per_token * m).sum(1) / denom).mean()
    with torch.no_grad():
        stats = {"kl": float(((kl * m).sum(1) / denom).mean()),
                 "clip_frac": float((((ratio - 1).abs() > eps).float() * m).sum() / m.sum().clamp(min=1))}
    return loss, stats


def rollout_seed(seed: int, step: int, index: int) -> int:
    digest = hashlib.sha256(f"{seed}/{step}/{index}".encode()).digest()
    return int.from_bytes(digest[:6], "little")


class GRPORun:
    def __init__(self, cfg: GRPOConfig):
        self.cfg = cfg
        if cfg.group < 2:
            raise ValueError("group must be >= 2: GRPO compares rollouts of the same prompt")
        self.session = Session(cfg)
        acc = self.acc = self.session.accelerator
        lora = LoraSpec(cfg.lora_rank, cfg.lora_alpha) if cfg.lora_rank > 0 else None
        self.scorer, self.loaded = load_policy(cfg.model, lora, cfg.gradient_checkpointing)
        self.items = self._prompts()
        self.ensemble = Ensemble([build(s, device=str(acc.device)) for s in cfg.rewards], cfg.reward_weights)
        self.reference = None
        if not self.scorer.is_lora or cfg.reference == "copy":
            self.reference = copy.deepcopy(self.scorer.core).eval().requires_grad_(False)
        self.session.prepare(self.scorer)
        settings = TwigSettings(layout="interleaved", bands=cfg.bands, think=True, reflect=True,
                                theta=cfg.theta, cfg=cfg.cfg, guide_tokens=cfg.guide_tokens,
                                reflect_tokens=cfg.reflect_tokens, image=Sampling(cfg.image_temperature),
                                text=Sampling(cfg.text_temperature, top_p=0.95))
        self.sampler = TwigSampler(self.session.unwrapped.core, self.loaded.tokenizer, settings)
        self.step = 0

    def _prompts(self) -> list[dict[str, Any]]:
        cfg = self.cfg
        if cfg.prompts:
            return [{"prompt": p.prompt, "scene": None, "category": None, "canvas": None}
                    for p in read_prompts(cfg.prompts)][: cfg.limit]
        examples = load_examples(cfg.data, "train", cfg.limit)
        if not examples:
            raise ValueError(f"{cfg.data} has no train prompts")
        return [{"prompt": e.record.prompt, "scene": e.record.scene, "category": e.record.category,
                 "canvas": (e.record.image.width, e.record.image.height)} for e in examples]

    # -- one step ----------------------------------------------------------------------------
    def step_prompts(self, step: int) -> list[int]:
        """This process's prompt indices at a step (a seeded permutation per pass over prompts)."""
        cfg, acc = self.cfg, self.acc
        n = len(self.items)
        per = cfg.prompts_per_step
        start = (step * acc.num_processes + acc.process_index) * per
        out = []
        for pos in range(start, start + per):
            epoch, offset = divmod(pos, n)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
            out.append(int(perm[offset]))
        return out

    @torch.no_grad()
    def rollout(self, prompt_ids: list[int], step: int) -> tuple[list[Trajectory], list[Sample], list[int]]:
        cfg = self.cfg
        requests, groups = [], []
        for p_local, p in enumerate(prompt_ids):
            for g in range(cfg.group):
                index = (self.acc.process_index * cfg.prompts_per_step + p_local) * cfg.group + g
                requests.append(Request(self.items[p]["prompt"], seed=rollout_seed(cfg.seed, step, index)))
                groups.append(p_local)
        core = self.session.unwrapped.core
        core.eval()
        trajs: list[Trajectory] = []
        for i in range(0, len(requests), cfg.rollout_batch):   # in the weights' own dtype: the
            trajs += self.sampler.generate(requests[i: i + cfg.rollout_batch])   # cache is typed by it
        return trajs, self.samples(trajs, [prompt_ids[g] for g in groups]), groups

    def samples(self, trajs: list[Trajectory], prompt_ids: list[int]) -> list[Sample]:
        """Decoded images of trajectories, with what their prompts' rewards need."""
        from PIL import Image

        pixels = self.sampler.decode_images(trajs)
        return [Sample(t.prompt, Image.fromarray(px.numpy()), self.items[p]["category"], self.items[p]["scene"],
                       self.items[p]["canvas"]) for t, px, p in zip(trajs, pixels, prompt_ids, strict=True)]

    def sequences(self, trajs: list[Trajectory]) -> Batch:
        width = max(int(t.sequence["ids"].shape[0]) for t in trajs)
        pad = self.sampler.format.special.pad

        def padded(name: str, fill) -> torch.Tensor:
            rows = []
            for t in trajs:
                v = t.sequence[name]
                extra = torch.full((width - v.shape[0],), fill, dtype=v.dtype, device=v.device)
                rows.append(torch.cat([v, extra]))
            return torch.stack(rows)

        return Batch(padded("ids", pad), padded("is_img", False), padded("mask", 0),
                     padded("target", False), ["rollout"] * len(trajs))

    def learn(self, batch: Batch, adv: torch.Tensor) -> dict[str, float]:
        cfg, acc, scorer = self.cfg, self.acc, self.session.model
        n = batch.ids.shape[0]
        chunks = [slice(i, min(n, i + cfg.micro_batch)) for i in range(0, n, cfg.micro_batch)]
        batch = batch.to(acc.device)
        adv = adv.to(acc.device)
        old, ref = [], []
        with torch.no_grad(), acc.autocast():
            scorer.eval()
            for c in chunks:
                args = (batch.ids[c], batch.is_img[c], batch.mask[c], batch.target[c])
                old.append(scorer(*args))
                ref.append(self._reference_logps(*args))
        scorer.train()
        stats: dict[str, list[float]] = {"loss": [], "kl": [], "clip_frac": []}
        for _ in range(cfg.inner_steps):
            for j, c in enumerate(chunks):
                with self.session.maybe_no_sync(j == len(chunks) - 1), acc.autocast():
                    lp = scorer(batch.ids[c], batch.is_img[c], batch.mask[c], batch.target[c])
                    loss, st = grpo_loss(lp, old[j], ref[j], adv[c], batch.target[c] & batch.mask[c].bool(),
                                         cfg.beta, cfg.clip_eps)
                acc.backward(loss * (c.stop - c.start) / n)
                stats["loss"].append(float(loss.detach()))
                stats["kl"].append(st["kl"])
                stats["clip_frac"].append(st["clip_frac"])
            grad_norm = self.session.clip()
            self.session.optimizer.step()
            self.session.scheduler.step()
            self.session.optimizer.zero_grad(set_to_none=True)
        out = {k: float(np.mean(v)) for k, v in stats.items()}
        return out | {"grad_norm": grad_norm, "lr": self.session.scheduler.get_last_lr()[0]}

    def _reference_logps(self, *args) -> torch.Tensor:
        from generator.scoring import sequence_logps

        if self.reference is not None:
            return sequence_logps(self.reference, *args)
        policy = self.session.unwrapped.policy
        ctx = policy.disable_adapter() if hasattr(policy, "disable_adapter") else nullcontext()
        with ctx:
            return self.session.model(*args)

    def train_step(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        prompt_ids = self.step_prompts(self.step)
        trajs, samples, groups = self.rollout(prompt_ids, self.step)
        t1 = time.perf_counter()
        raw = self.ensemble.raw(samples)
        combined = self.ensemble.combine(raw, groups)
        adv = torch.tensor(group_advantages(combined, groups), dtype=torch.float32)
        t2 = time.perf_counter()
        metrics = self.learn(self.sequences(trajs), adv)
        t3 = time.perf_counter()
        self.step += 1
        out = {"step": self.step, "reward": float(raw.mean(1).mean())}
        out |= {f"reward_{n}": float(raw[:, i].mean()) for i, n in enumerate(self.ensemble.names)}
        out |= {"reward_std": float(raw.mean(1).std()), **metrics,
                "redrawn_bands": sum(b.regenerated for t in trajs for b in t.bands),
                "rollouts": len(trajs), "rollout_s": t1 - t0, "reward_s": t2 - t1, "learn_s": t3 - t2}
        return out

    # -- the loop ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"kind": "grpo", "digest": self.cfg.digest(), "config": self.cfg.to_json()}

    def run(self) -> Path:
        cfg, acc = self.cfg, self.acc
        self.step = self.session.resume("grpo")
        runlog = RunLog(Path(cfg.out), acc.is_main_process, cfg.tensorboard, self.step)
        runlog.write({"kind": "start", "step": self.step, "prompts": len(self.items),
                      "rewards": self.ensemble.describe(), "device": str(acc.device),
                      **count_parameters(self.session.unwrapped)})
        bar = self.session.bar(cfg.steps, "grpo", initial=self.step)
        while self.step < cfg.steps:
            metrics = self.train_step()
            if not math.isfinite(metrics["loss"]):
                raise FloatingPointError(f"step {self.step}: the loss is {metrics['loss']}; lower --lr")
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                runlog.write({"kind": "train", **metrics})
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward']:.3f}", kl=f"{metrics['kl']:.2e}")
            if cfg.save_every and (self.step % cfg.save_every == 0 or self.step == cfg.steps):
                checkpoints.save(acc, Path(cfg.out), self.step, self.state(), cfg.keep)
        bar.close()
        final = self.session.export(self.loaded.tokenizer, {**self.state(), "step": self.step})
        runlog.write({"kind": "done", "step": self.step, "checkpoint": str(final)})
        runlog.close()
        return final

    @torch.no_grad()
    def mean_reward(self, seeds: list[int], prompt_index: int = 0) -> float:
        """Mean raw ensemble reward of rollouts with fixed seeds (for before/after comparisons)."""
        self.session.unwrapped.core.eval()
        trajs = self.sampler.generate([Request(self.items[prompt_index]["prompt"], seed=s) for s in seeds])
        return float(self.ensemble.raw(self.samples(trajs, [prompt_index] * len(trajs))).mean())


def train_grpo(cfg: GRPOConfig) -> Path:
    return GRPORun(cfg).run()
