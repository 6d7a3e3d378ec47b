"""The drawable vocabulary: colors, shapes, textures, backgrounds, numbers."""

from __future__ import annotations

from dataclasses import dataclass

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 88, 214),
    "yellow": (242, 208, 24),
    "orange": (245, 130, 20),
    "purple": (128, 60, 180),
    "pink": (240, 120, 180),
    "brown": (125, 78, 38),
    "black": (22, 22, 22),
    "white": (248, 248, 248),
    "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "diamond", "pentagon")
TEXTURES = ("plain", "striped", "dotted", "checkered")
TEXTURE_WORDS = {"plain": "", "striped": "striped", "dotted": "polka-dot", "checkered": "checkered"}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}


@dataclass(frozen=True)
class Background:
    name: str
    sky_top: tuple[int, int, int]
    sky_bottom: tuple[int, int, int]
    ground: tuple[int, int, int]
    sky_words: tuple[str, ...]
    ground_words: tuple[str, ...]
    decor: str  # sun, moon_stars, clouds, window, snow, none
    ground_pattern: str  # none, planks, waves, tufts


BACKGROUNDS: dict[str, Background] = {
    b.name: b
    for b in (
        Background("meadow", (120, 180, 235), (190, 225, 250), (96, 170, 70),
                   ("a clear pale-blue sky", "a soft blue sky"), ("green grass", "a grassy meadow"),
                   "clouds", "tufts"),
        Background("beach", (90, 190, 230), (200, 235, 245), (232, 208, 150),
                   ("a bright cyan sky", "a sunny sky"), ("pale sand", "a sandy beach"),
                   "sun", "none"),
        Background("night", (10, 16, 48), (40, 50, 96), (46, 52, 60),
                   ("a dark night sky", "a deep navy night sky"), ("dark slate ground", "shadowy ground"),
                   "moon_stars", "none"),
        Background("sunset", (250, 150, 90), (250, 205, 140), (92, 58, 70),
                   ("an orange sunset sky", "a warm glowing sky"), ("dusky purple hills", "dark hills"),
                   "sun", "none"),
        Background("room", (228, 214, 188), (236, 226, 204), (150, 104, 64),
                   ("a cream-colored wall", "a plain beige wall"), ("a wooden floor", "brown floorboards"),
                   "window", "planks"),
        Background("snow", (196, 206, 218), (226, 232, 240), (250, 250, 252),
                   ("an overcast winter sky", "a pale gray sky"), ("fresh white snow", "a snowy field"),
                   "snow", "none"),
        Background("sea", (110, 175, 230), (175, 215, 245), (30, 90, 150),
                   ("a blue sky", "a breezy sky"), ("deep blue water", "the open sea"),
                   "clouds", "waves"),
    )
}


def article(word: str) -> str:
    """'a' or 'an' for the word that follows."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def color_distance(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) ** 0.5
