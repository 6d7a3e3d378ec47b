"""What every teacher-backed stage shares: asking a role, charging what it cost to the record,
and turning a failed request into a reject with its reason."""

from __future__ import annotations

from pydantic import BaseModel

from annotators.teacher import Spend, Teacher, TeacherError
from annotators.teacher.prompts import Prompt
from pipeline.record import Reject, Sample
from pipeline.stage import Resources, Stage
from schemas import TeacherRole, Usage

BACKEND = "openai-compatible"


def charge(sample: Sample, role: str, model: str, version: str, spend: Spend) -> None:
    """Add a role's spend to the record's provenance and to the unit's cost accounting."""
    current = getattr(sample.teacher, role)
    usage = current.usage if current is not None else Usage()
    setattr(sample.teacher, role, TeacherRole(
        backend=BACKEND, model=model, prompt_version=version,
        usage=Usage(calls=usage.calls + spend.calls,
                    prompt_tokens=usage.prompt_tokens + spend.prompt_tokens,
                    completion_tokens=usage.completion_tokens + spend.completion_tokens)))
    books = sample.work.setdefault("spend", {})
    books.setdefault((role, model), Spend()).add(spend)


class TeacherStage(Stage):
    is_async = True
    resources = Resources(cpus=0.25)
    role = "teacher"

    def __init__(self, teacher: Teacher) -> None:
        self.teacher = teacher

    async def ask(self, sample: Sample, prompt: Prompt, output: type[BaseModel], images=(),
                  role: str | None = None) -> dict:
        role = role or self.role
        model = self.teacher.config.chat_model(role)
        try:
            reply = await self.teacher.ask(role, prompt, output, tuple(images))
        except TeacherError as e:
            charge(sample, role, model, prompt.version, e.spend)
            raise Reject(f"teacher {role}: {e.reason}") from None
        charge(sample, role, reply.model, prompt.version, reply.spend)
        return reply.data


def guides_so_far(guides: list[str]) -> str:
    return "\n".join(f"{i + 1}. {g}" for i, g in enumerate(guides)) or "(none yet)"
