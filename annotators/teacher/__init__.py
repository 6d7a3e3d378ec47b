"""Teacher MLLMs through any OpenAI-compatible endpoint: settings, limits, cache, prompts, client."""

from annotators.teacher.client import (
    LIVE_COUNTERS,
    FatalTeacherError,
    Reply,
    Spend,
    Teacher,
    TeacherError,
    image_data_url,
    new_event_loop,
)
from annotators.teacher.settings import ChatRole, Endpoint, ImageRole, Price, TeacherConfig

__all__ = ["LIVE_COUNTERS", "ChatRole", "Endpoint", "FatalTeacherError", "ImageRole", "Price", "Reply",
           "Spend", "Teacher", "TeacherConfig", "TeacherError", "image_data_url", "new_event_loop"]
