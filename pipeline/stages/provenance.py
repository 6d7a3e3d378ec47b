"""Provenance of the offline scene annotators (recorded under `teacher` in each record)."""

from schemas import TeacherRole

SCENE_ORACLE = TeacherRole(backend="scene-oracle", model="twig-forge-scene", prompt_version="scene-v1")
