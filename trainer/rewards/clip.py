"""CLIPScore: how well an image matches its prompt by a CLIP-architecture model.

Any checkpoint that loads as `transformers.CLIPModel` works: openai/clip-vit-large-patch14,
yuvalkirstain/PickScore_v1 or other HPS-style fine-tuned CLIP weights in Hugging Face format. A
checkpoint without its own processor files (PickScore ships none) takes `processor=` the id of the
base model's processor. The score is max(cosine(image embedding, text embedding), 0), which is
CLIPScore / 100 (without CLIPScore's 2.5 rescale); real CLIP models give about 0.15-0.40.
"""

from __future__ import annotations

from typing import Any

import torch

from trainer.rewards.base import RewardError, Sample
from trainer.rewards.tiny import load_config, resolve_checkpoint


class ClipReward:
    """Cosine similarity of CLIP image and prompt embeddings, clipped at 0. Prompts longer than the
    model's text window (77 tokens for OpenAI CLIP) are truncated."""

    name = "clip"

    def __init__(self, model: str = "tiny", device: str = "cpu", batch_size: int = 16,
                 processor: str | None = None) -> None:
        from transformers import AutoProcessor, CLIPModel

        if batch_size < 1:
            raise RewardError(f"clip: batch_size must be at least 1, got {batch_size}")
        self.model_id, self.device, self.batch_size = model, device, batch_size
        self.path = resolve_checkpoint(model, "clip")
        config = load_config(self.path, self.name)
        if config.model_type != "clip":
            raise RewardError(f"clip: {self.path!r} is a {config.model_type!r} checkpoint; "
                              "ClipReward needs a CLIP-architecture one (model_type 'clip')")
        self.processor_id = processor or self.path
        self.processor = AutoProcessor.from_pretrained(self.processor_id)
        self.model = CLIPModel.from_pretrained(self.path).to(device).eval()
        self.max_length = min(config.text_config.max_position_embeddings,
                              self.processor.tokenizer.model_max_length)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model_id, "checkpoint": self.path,
                "processor": self.processor_id, "device": self.device,
                "batch_size": self.batch_size, "max_text_tokens": self.max_length,
                "score": "max(cos(image, text), 0)"}

    def score(self, samples: list[Sample]) -> list[float]:
        return [min(max(c, 0.0), 1.0) for c in self.cosines(samples)]

    def cosines(self, samples: list[Sample]) -> list[float]:
        """The unclipped cosine similarity of each image and its prompt, in [-1, 1]."""
        out: list[float] = []
        for start in range(0, len(samples), self.batch_size):
            out.extend(self._cosines(samples[start:start + self.batch_size]))
        return out

    @torch.inference_mode()
    def _cosines(self, samples: list[Sample]) -> list[float]:
        inputs = self.processor(text=[s.prompt for s in samples],
                                images=[s.image.convert("RGB") for s in samples],
                                padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt").to(self.device)
        image = _features(self.model.get_image_features(pixel_values=inputs["pixel_values"]))
        text = _features(self.model.get_text_features(input_ids=inputs["input_ids"],
                                                      attention_mask=inputs["attention_mask"]))
        return torch.nn.functional.cosine_similarity(image.float(), text.float(), dim=-1).tolist()


def _features(output: Any) -> torch.Tensor:
    """The projected embeddings: transformers 5 returns a model output whose `pooler_output` holds
    them, older versions the tensor itself."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output
