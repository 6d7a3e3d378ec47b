"""Annotators: who writes prompts, band guides and reflections (scene oracle, teacher MLLMs)."""
