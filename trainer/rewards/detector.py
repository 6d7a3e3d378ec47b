"""Objects, counts and positions by an open-vocabulary detector (GroundingDINO).

Each object the prompt names is queried on its own ("apple."). A query box is a detection of it
when its highest sigmoid logit over the object's own text tokens is above `box_threshold`;
overlapping detections (IoU > `iou_threshold`) are merged by greedy suppression. A sample scores:

* spatial (a relation was asked, category spatial/3d_spatial or unknown): 1 when both objects are
  found and the centres of their best boxes satisfy the relation, 0.5 when both are found but the
  relation fails, 0 otherwise. Left/right/above/below compare box centres; relations a 2-D box
  cannot judge (near, next to, on side of, in front of, behind, hidden by) count as satisfied once
  both objects are found.
* numeracy (category numeracy, or unknown with a number above one): the mean over objects of 1
  when the detected count equals the asked count, else 0 (an object with no asked count: 1 when
  found at all).
* otherwise: the fraction of the named objects that are found.

The relation, count and suppression logic are pure functions on boxes (`relation_holds`,
`spatial_score`, `count_score`, `suppress`), tested on hand-made boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from PIL import Image

from trainer.rewards.base import RewardError, Sample
from trainer.rewards.phrases import (
    HORIZONTAL,
    VERTICAL,
    Relation,
    counted_objects,
    normalize,
    scene_objects,
    scene_relation,
    spatial_relation,
)
from trainer.rewards.tiny import load_config, resolve_checkpoint

Box = tuple[float, float, float, float]  # x0, y0, x1, y1; any unit, y grows downwards


class Detection(NamedTuple):
    box: Box
    score: float


# ----------------------------------------------------------------------------- pure box logic


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 for empty boxes)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _area(b: Box) -> float:
    return max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)


def center(b: Box) -> tuple[float, float]:
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2


def suppress(detections: list[Detection], iou_threshold: float = 0.5) -> list[Detection]:
    """Greedy non-maximum suppression: best score first, dropping boxes that overlap a kept one by
    more than `iou_threshold`."""
    kept: list[Detection] = []
    for det in sorted(detections, key=lambda d: d.score, reverse=True):
        if all(iou(det.box, k.box) <= iou_threshold for k in kept):
            kept.append(det)
    return kept


def relation_holds(relation: str, subject: Box, obj: Box) -> bool | None:
    """Whether `subject` is `relation` `obj` by box centres; None for relations that 2-D boxes
    cannot judge (near, next to, on side of, in front of, behind, hidden by)."""
    (sx, sy), (ox, oy) = center(subject), center(obj)
    if relation in HORIZONTAL:
        return sx < ox if relation == "left of" else sx > ox
    if relation in VERTICAL:
        return sy < oy if relation == "above" else sy > oy
    return None


def spatial_score(relation: str, subject: list[Detection], obj: list[Detection]) -> float:
    """1 when both objects are found and their best boxes satisfy the relation (or it cannot be
    judged), 0.5 when both are found in the wrong relation, 0 when either is missing."""
    if not subject or not obj:
        return 0.0
    best_s = max(subject, key=lambda d: d.score)
    best_o = max(obj, key=lambda d: d.score)
    holds = relation_holds(relation, best_s.box, best_o.box)
    return 0.5 if holds is False else 1.0


def count_score(asked: int | None, found: int) -> float:
    """1 when `found` equals `asked` (or, with no asked count, when anything is found), else 0."""
    if asked is None:
        return float(found > 0)
    return float(found == asked)


def presence_score(found: list[int]) -> float:
    """The fraction of objects found at least once (1.0 for no objects)."""
    return sum(n > 0 for n in found) / len(found) if found else 1.0


# ----------------------------------------------------------------------------- what to ask


@dataclass
class Plan:
    """How one sample is scored: `mode` (spatial, numeracy or presence), the objects with their
    asked counts, and the relation for spatial."""

    mode: str
    objects: list[tuple[str, int | None]]
    relation: Relation | None = None

    @property
    def queries(self) -> list[str]:
        names = [name for name, _ in self.objects]
        if self.relation is not None:
            names = [self.relation.subject, self.relation.object]
        return list(dict.fromkeys(names))


def plan(sample: Sample) -> Plan:
    """What the detector is asked for one sample (from the scene when it is known)."""
    if sample.scene is not None:
        objects = scene_objects(sample.scene, sample.prompt)
        relation = scene_relation(sample.scene, sample.prompt)
    else:
        objects = counted_objects(sample.prompt)
        relation = spatial_relation(sample.prompt)
    objects = objects or [(normalize(sample.prompt), None)]
    category = sample.category
    if relation is not None and category in (None, "spatial", "3d_spatial"):
        return Plan("spatial", objects, relation)
    counted = any(n is not None and n > 1 for _, n in objects)
    if category == "numeracy" or (category is None and counted):
        return Plan("numeracy", objects)
    return Plan("presence", objects)


def plan_score(p: Plan, found: dict[str, list[Detection]]) -> float:
    """A sample's score from its plan and the detections of each query."""
    if p.mode == "spatial" and p.relation is not None:
        return spatial_score(p.relation.relation, found[p.relation.subject],
                             found[p.relation.object])
    if p.mode == "numeracy":
        scores = [count_score(n, len(found[name])) for name, n in p.objects]
        return sum(scores) / len(scores)
    return presence_score([len(found[name]) for name, _ in p.objects])


# ----------------------------------------------------------------------------- the reward


class DetectorReward:
    """GroundingDINO object presence, counts and 2-D relations (see the module docstring)."""

    name = "detector"

    def __init__(self, model: str = "tiny", device: str = "cpu", box_threshold: float = 0.35,
                 iou_threshold: float = 0.5, batch_size: int = 8) -> None:
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        if batch_size < 1:
            raise RewardError(f"detector: batch_size must be at least 1, got {batch_size}")
        self.model_id, self.device, self.batch_size = model, device, batch_size
        self.box_threshold, self.iou_threshold = box_threshold, iou_threshold
        self.path = resolve_checkpoint(model, "gdino")
        config = load_config(self.path, self.name)
        if config.model_type != "grounding-dino":
            raise RewardError(f"detector: {self.path!r} is a {config.model_type!r} checkpoint; "
                              "DetectorReward needs GroundingDINO "
                              "(GroundingDinoForObjectDetection, model_type 'grounding-dino')")
        self.max_text_len = config.max_text_len
        self.processor = AutoProcessor.from_pretrained(self.path)
        self.model = GroundingDinoForObjectDetection.from_pretrained(self.path).to(device).eval()
        tokenizer = self.processor.tokenizer
        self.ignored = torch.tensor(sorted({*tokenizer.all_special_ids,
                                            tokenizer.convert_tokens_to_ids(".")}))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model_id, "checkpoint": self.path,
                "device": self.device, "box_threshold": self.box_threshold,
                "iou_threshold": self.iou_threshold, "batch_size": self.batch_size,
                "score": "spatial: 1 / 0.5 wrong relation / 0 missing; numeracy: mean exact "
                         "count; else fraction of objects found"}

    def score(self, samples: list[Sample]) -> list[float]:
        plans = [plan(s) for s in samples]
        images = [s.image.convert("RGB") for s in samples]
        found: list[dict[str, list[Detection]]] = [{} for _ in samples]
        for chunk in self._chunks(plans, images):
            detections = self.detect([images[i] for i, _ in chunk], [q for _, q in chunk])
            for (i, query), dets in zip(chunk, detections, strict=True):
                found[i][query] = dets
        return [plan_score(p, f) for p, f in zip(plans, found, strict=True)]

    def _chunks(self, plans: list[Plan], images: list[Image.Image]) -> list[list[tuple[int, str]]]:
        """(sample, query) pairs in batches of images of one size: a batch of mixed sizes would be
        padded, and the backbone sees the padding, so results would depend on the batch."""
        by_size: dict[tuple[int, int], list[tuple[int, str]]] = {}
        for i, p in enumerate(plans):
            by_size.setdefault(images[i].size, []).extend((i, q) for q in p.queries)
        return [pairs[start:start + self.batch_size] for pairs in by_size.values()
                for start in range(0, len(pairs), self.batch_size)]

    @torch.inference_mode()
    def detect(self, images: list[Image.Image], queries: list[str]) -> list[list[Detection]]:
        """Detections (boxes in relative image coordinates) of one query in each image."""
        texts = [f"{q.strip().rstrip('.').lower()}." for q in queries]
        inputs = self.processor(images=images, text=texts, padding=True, truncation=True,
                                max_length=self.max_text_len, return_tensors="pt")
        outputs = self.model(**inputs.to(self.device))
        ids = inputs["input_ids"]
        phrase = inputs["attention_mask"].bool() & ~torch.isin(ids, self.ignored.to(ids.device))
        logits = outputs.logits[..., : ids.shape[1]].float()  # (batch, queries, tokens)
        logits = logits.masked_fill(~phrase[:, None, :], float("-inf"))
        scores = logits.max(dim=-1).values.sigmoid().cpu()
        boxes = _corners(outputs.pred_boxes.float()).cpu()
        return [self._keep(b, s) for b, s in zip(boxes, scores, strict=True)]

    def _keep(self, boxes: torch.Tensor, scores: torch.Tensor) -> list[Detection]:
        keep = scores > self.box_threshold
        dets = [Detection(tuple(b), float(s)) for b, s in
                zip(boxes[keep].tolist(), scores[keep].tolist(), strict=True)]
        return suppress(dets, self.iou_threshold)


def _corners(boxes: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) -> (x0, y0, x1, y1)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
