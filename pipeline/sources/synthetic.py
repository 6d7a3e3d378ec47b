"""The offline default source: seeded compositional scenes drawn with Pillow."""

from __future__ import annotations

from annotators.scene import render_scene, sample_scene
from pipeline.record import Sample, WorkItem
from pipeline.sources.base import Source, stable_key
from schemas import Source as SourceInfo


class SyntheticSource(Source):
    kind = "synthetic"

    def items(self) -> list[WorkItem]:
        seed = self.config.seed
        n = self.config.source.count
        if self.config.limit is not None:  # a big count with a small limit lists only the limit
            n = min(n, self.config.limit)
        return [self.item(stable_key("syn", f"{seed}:{i}"), f"synthetic://{seed}/{i}", i)
                for i in range(n)]

    def load(self, item: WorkItem) -> Sample:
        src = self.config.source
        spec = sample_scene(self.config.seed, item.ref, size=self.config.image.size,
                            defect_rate=src.defect_rate, categories=tuple(src.categories))
        return Sample(key=item.key, split=item.split, category=spec.category,
                      source=SourceInfo(kind="synthetic", uri=item.uri,
                                        license=src.license or self.config.card.license),
                      image=render_scene(spec), work={"spec": spec})
