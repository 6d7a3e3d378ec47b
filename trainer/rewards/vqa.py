"""Attribute binding by visual question answering, as T2I-CompBench scores it with BLIP-VQA.

For each attribute noun phrase of the prompt ("blue bench", "green bowl") the model is asked
"{phrase}?" about the image, and P(yes) is the softmax over the two candidate answers "yes" and
"no" of their sequence log-likelihoods under the answer decoder (BLIP's `rank_answer` with two
candidates). A sample scores the product of P(yes) over its phrases; a prompt without a parsable
phrase asks the whole prompt. With a `Sample.scene` the phrases come from the scene.

Supported checkpoints: BLIP (`BlipForQuestionAnswering`, e.g. Salesforce/blip-vqa-base) and GIT
(`GitForCausalLM`, e.g. microsoft/git-large-vqav2, where the answer follows the question).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
from PIL import Image

from trainer.rewards.base import RewardError, Sample
from trainer.rewards.phrases import noun_phrases, scene_phrases
from trainer.rewards.tiny import load_config, resolve_checkpoint

ANSWERS = ("yes", "no")
SUPPORTED = {"blip": "BlipForQuestionAnswering", "git": "GitForCausalLM"}


class _Backend(Protocol):
    def answer_logliks(self, images: list[Image.Image],
                       questions: list[str]) -> torch.Tensor: ...


class VqaReward:
    """Product over the prompt's attribute phrases of P(yes | image, "{phrase}?")."""

    name = "vqa"

    def __init__(self, model: str = "tiny", device: str = "cpu", batch_size: int = 16) -> None:
        if batch_size < 1:
            raise RewardError(f"vqa: batch_size must be at least 1, got {batch_size}")
        self.model_id, self.device, self.batch_size = model, device, batch_size
        self.path = resolve_checkpoint(model, "blip")
        config = load_config(self.path, self.name)
        self.architecture = _architecture(config, self.path)
        backend = _BlipBackend if self.architecture == "BlipForQuestionAnswering" else _GitBackend
        self.backend: _Backend = backend(self.path, device)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model_id, "checkpoint": self.path,
                "architecture": self.architecture, "device": self.device,
                "batch_size": self.batch_size, "answers": list(ANSWERS),
                "score": "prod over phrases of P(yes | '{phrase}?')"}

    def questions(self, sample: Sample) -> list[str]:
        """What is asked about one sample: one question per attribute noun phrase."""
        if sample.scene is not None:
            phrases = scene_phrases(sample.scene, sample.prompt)
        else:
            phrases = noun_phrases(sample.prompt)
        return [f"{p}?" for p in phrases] or [sample.prompt.strip().rstrip(".!?") + "?"]

    def yes_probability(self, images: list[Image.Image], questions: list[str]) -> list[float]:
        """P(yes) against "no" for each (image, question) pair, in batches."""
        out: list[float] = []
        for start in range(0, len(questions), self.batch_size):
            stop = start + self.batch_size
            logliks = self.backend.answer_logliks(images[start:stop], questions[start:stop])
            out.extend(yes_probability(logliks).tolist())
        return out

    def score(self, samples: list[Sample]) -> list[float]:
        owners, images, questions = [], [], []
        for i, sample in enumerate(samples):
            image = sample.image.convert("RGB")
            for question in self.questions(sample):
                owners.append(i)
                images.append(image)
                questions.append(question)
        per_sample: list[list[float]] = [[] for _ in samples]
        for owner, p in zip(owners, self.yes_probability(images, questions), strict=True):
            per_sample[owner].append(p)
        return [math.prod(ps) for ps in per_sample]


def yes_probability(logliks: torch.Tensor) -> torch.Tensor:
    """Softmax over the answers' sequence log-likelihoods (columns: yes, no), P(yes) per row."""
    return torch.softmax(logliks.double(), dim=-1)[:, 0]


def _architecture(config: Any, path: str) -> str:
    """The supported model class for a checkpoint's config, or a RewardError naming them."""
    declared = list(getattr(config, "architectures", None) or [])
    arch = SUPPORTED.get(config.model_type)
    if arch is None or (declared and arch not in declared):
        names = ", ".join(f"{a} ({kind})" for kind, a in SUPPORTED.items())
        found = "/".join(declared) or "no declared architecture"
        raise RewardError(f"vqa: {path!r} is a {config.model_type!r} checkpoint ({found}); "
                          f"VqaReward supports {names}")
    return arch


def _sequence_logliks(logits: torch.Tensor, targets: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
    """Sum of log p(target) over positions where `mask` is 1; logits are aligned with targets."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)


class _BlipBackend:
    """BLIP-VQA: image encoder -> question encoder (cross-attends the image) -> answer decoder
    (cross-attends the question). `BlipForQuestionAnswering.forward` returns no decoder logits, so
    the three parts are called directly.

    transformers 5.23's BLIP text cross-attention ignores `encoder_attention_mask` (the mask is
    dropped between `BlipTextAttention` and its self-attention module), so the answer decoder would
    attend to a padded question's padding. Questions are therefore run in groups of equal token
    length, which need no padding: a batch scores exactly as its questions one at a time."""

    def __init__(self, path: str, device: str) -> None:
        from transformers import AutoProcessor, BlipForQuestionAnswering

        self.device = device
        self.processor = AutoProcessor.from_pretrained(path)
        self.model = BlipForQuestionAnswering.from_pretrained(path).to(device).eval()
        tokenizer = self.processor.tokenizer
        self.max_length = min(tokenizer.model_max_length,
                              self.model.config.text_config.max_position_embeddings)
        self.answers = []
        for answer in ANSWERS:
            ids = tokenizer(answer, return_tensors="pt").input_ids  # [CLS] answer [SEP]
            ids[:, 0] = self.model.decoder_start_token_id  # BLIP decodes from [DEC]
            self.answers.append(ids.to(device))

    def answer_logliks(self, images: list[Image.Image], questions: list[str]) -> torch.Tensor:
        tokens = self.processor.tokenizer(questions, truncation=True, max_length=self.max_length)
        lengths = [len(ids) for ids in tokens.input_ids]
        out = torch.empty(len(questions), len(ANSWERS))
        for length in sorted(set(lengths)):
            rows = [i for i, n in enumerate(lengths) if n == length]
            out[rows] = self._same_length([images[i] for i in rows],
                                          [questions[i] for i in rows]).cpu()
        return out

    @torch.inference_mode()
    def _same_length(self, images: list[Image.Image], questions: list[str]) -> torch.Tensor:
        inputs = self.processor(images=images, text=questions, truncation=True,
                                max_length=self.max_length, return_tensors="pt").to(self.device)
        vision = self.model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state
        image_mask = torch.ones(vision.shape[:-1], dtype=torch.long, device=vision.device)
        question = self.model.text_encoder(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
            encoder_hidden_states=vision, encoder_attention_mask=image_mask).last_hidden_state
        columns = []
        for ids in self.answers:
            ids = ids.expand(len(questions), -1)
            logits = self.model.text_decoder(
                input_ids=ids, encoder_hidden_states=question,
                encoder_attention_mask=inputs["attention_mask"]).logits
            columns.append(_sequence_logliks(logits[:, :-1], ids[:, 1:], torch.ones_like(ids[:, 1:])))
        return torch.stack(columns, dim=-1)


class _GitBackend:
    """GIT: one causal decoder over [image tokens, CLS, question, answer, SEP]; an answer's
    log-likelihood is that of its tokens and the closing SEP after the question."""

    def __init__(self, path: str, device: str) -> None:
        from transformers import AutoProcessor, GitForCausalLM

        self.device = device
        self.processor = AutoProcessor.from_pretrained(path)
        self.model = GitForCausalLM.from_pretrained(path).to(device).eval()
        tokenizer = self.processor.tokenizer
        self.cls, self.sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.pad = tokenizer.pad_token_id or 0
        self.answers = [tokenizer(a, add_special_tokens=False).input_ids + [self.sep]
                        for a in ANSWERS]
        room = min(tokenizer.model_max_length, self.model.config.max_position_embeddings)
        self.max_question = room - 1 - max(map(len, self.answers))  # CLS + question + answer

    @torch.inference_mode()
    def answer_logliks(self, images: list[Image.Image], questions: list[str]) -> torch.Tensor:
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        tokenizer = self.processor.tokenizer
        tokens = tokenizer(questions, add_special_tokens=False, truncation=True,
                           max_length=self.max_question)
        prefixes = [[self.cls, *ids] for ids in tokens.input_ids]
        columns = [self._logliks(pixels, prefixes, answer) for answer in self.answers]
        return torch.stack(columns, dim=-1).cpu()

    def _logliks(self, pixels: torch.Tensor, prefixes: list[list[int]],
                 answer: list[int]) -> torch.Tensor:
        seqs = [p + answer for p in prefixes]
        width = max(map(len, seqs))
        ids = torch.tensor([s + [self.pad] * (width - len(s)) for s in seqs], device=self.device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs],
                            device=self.device)
        logits = self.model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
        text_logits = logits[:, logits.shape[1] - width:]  # drop the image-token positions
        targets = torch.zeros_like(ids)
        weights = torch.zeros(ids.shape, dtype=torch.float32, device=self.device)
        for row, prefix in enumerate(prefixes):
            span = slice(len(prefix), len(prefix) + len(answer))
            targets[row, span] = ids[row, span]
            weights[row, span] = 1.0
        shifted = torch.zeros_like(text_logits)  # logits at t-1 predict token t
        shifted[:, 1:] = text_logits[:, :-1]
        return _sequence_logliks(shifted, targets, weights)
