"""judge (optional): a teacher scores how faithfully the whole image shows the prompt; the
filter stage drops records under `filter.min_judge_score`."""

from __future__ import annotations

from annotators.teacher import prompts
from annotators.teacher.outputs import JudgeOut
from pipeline.record import Sample
from pipeline.stages.teaching import TeacherStage


class JudgeStage(TeacherStage):
    name = role = "judge"

    async def acall(self, sample: Sample) -> Sample:
        data = await self.ask(sample, prompts.render(prompts.JUDGE, prompt=sample.prompt), JudgeOut,
                              [sample.image])
        sample.filters.judge_score = data["score"]
        return sample
