"""Offline annotators for synthetic scenes: grammar, renderer, guides and reflections from the scene graph."""

from annotators.scene.grammar import SceneSpec, sample_scene, scene_graph
from annotators.scene.language import band_guides, describe_prompt
from annotators.scene.oracle import band_reflections
from annotators.scene.render import render_scene

__all__ = [
    "SceneSpec",
    "band_guides",
    "band_reflections",
    "describe_prompt",
    "render_scene",
    "sample_scene",
    "scene_graph",
]
