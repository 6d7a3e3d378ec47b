"""Read what a T2I-CompBench-style prompt asks for: noun phrases, counted objects, one relation.

A small rule-based reader, no tagger and no dependencies. It is exact for the templated categories
("a blue bench and a green bowl", "three apples and two dogs", "a cat on the left of a dog") and a
fair guess for free sentences ("The red hat was on top of the brown coat rack."):

    noun_phrases("a blue bench and a green bowl")      -> ["blue bench", "green bowl"]
    counted_objects("three apples and two dogs")         -> [("apple", 3), ("dog", 2)]
    spatial_relation("a giraffe next to a lamp")         -> Relation("giraffe", "next to", "lamp")

The text is cut into segments at punctuation, conjunctions, prepositions, auxiliaries, verbs and
relation phrases; a segment's leading article or number gives its count and is dropped. When the
exact scene of a synthetic prompt is known, the `scene_*` functions read it from the scene instead.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from schemas.twig_v1 import Scene

NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
           "eight": 8, "nine": 9, "ten": 10}
SINGLE = {"a": 1, "an": 1}
DETERMINERS = {"the", "this", "that", "these", "those", "some", "many", "several", "his", "her",
               "its", "their", "our", "my", "your", "each", "every", "another", "other", "both"}

# Surface form -> canonical relation. Longest forms first so "on the left of" wins over "on".
RELATIONS: dict[str, str] = {
    "on the left side of": "left of", "on the right side of": "right of",
    "on the left of": "left of", "on the right of": "right of", "to the left of": "left of",
    "to the right of": "right of", "left of": "left of", "right of": "right of",
    "on the top of": "above", "on top of": "above", "above": "above",
    "on the bottom of": "below", "at the bottom of": "below", "below": "below", "under": "below",
    "beneath": "below", "underneath": "below",
    "on side of": "on side of", "on the side of": "on side of", "next to": "next to",
    "beside": "next to", "near": "near", "in front of": "in front of", "behind": "behind",
    "hidden by": "hidden by",
}
HORIZONTAL = ("left of", "right of")
VERTICAL = ("above", "below")

_BREAK_TEXT = """
and or but nor while whereas which who whom whose where when that so because yet if then than as
with without on in at of by from to into onto over through across around along alongside against
between among for toward towards upon up down off out about like via inside outside within near
is are was were be been being am has have had do does did could will would should might must
it they he she them him we i you there here me us themselves itself himself herself
after before during until since
very too also not just only all
sit sits sat stand stands stood lie lies lay lays rests hang hangs hung float floats flies
flew fall falls fell swim swims swam run runs ran grow grows grew hold holds held hide hides hid
stuck spin spins spun shine shines shone make makes made take takes took see sees
look looks go goes went sleep sleeps slept eat eats ate read reads play plays wear wears wore sing
sings sang come comes came give gives gave keep keeps kept strike struck led
loom looms stride strode speak speaks spoke reach reaches meet meets met catch catches caught
wrote writes drew draws threw throws blew blows broke breaks froze shook woke swung dug fed bit
"""
_BREAK_WORDS = frozenset(_BREAK_TEXT.split())
# Words ending in -ing / -ed that are nouns or adjectives, not verbs.
_NOT_VERBS_TEXT = """
ring rings earring earrings painting paintings building buildings ceiling clothing wedding evening
morning string strings thing things king wing wings pudding icing frosting railing stuffing sling
swing swings spring flooring sibling ping
striped checkered dotted spotted tiled sloped jagged curved knitted quilted frosted polished
rusted rusty wrinkled crumpled twisted folded layered pointed rounded tinted painted carved gilded
studded speckled freckled stained faded matted mottled
"""
_NOT_VERBS = frozenset(_NOT_VERBS_TEXT.split())
_IRREGULAR = {"people": "person", "men": "man", "women": "woman", "children": "child",
              "mice": "mouse", "geese": "goose", "teeth": "tooth", "feet": "foot", "knives": "knife",
              "leaves": "leaf", "wolves": "wolf", "shelves": "shelf", "loaves": "loaf",
              "calves": "calf", "halves": "half", "lives": "life", "wives": "wife",
              "dice": "die", "oxen": "ox", "cacti": "cactus"}
_UNCHANGED = {"fish", "sheep", "deer", "shrimp", "moose", "series", "species", "glasses", "scissors",
              "pants", "jeans", "shorts", "bus", "gas", "lens", "news", "chess", "dress", "glass",
              "grass", "cross", "class", "boss", "moss", "octopus", "cactus", "virus", "iris"}

_OES = {"shoes", "toes", "canoes", "hoes", "oboes", "horseshoes", "tiptoes"}

_REL_PATTERN = re.compile(r"\b(" + "|".join(sorted(map(re.escape, RELATIONS), key=len,
                                                    reverse=True)) + r")\b")
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*|[^\sa-z0-9]")


class Relation(NamedTuple):
    """One spatial relation: `subject` is `relation` `object` (canonical relation name)."""

    subject: str
    relation: str
    object: str


class Segment(NamedTuple):
    """A noun phrase and the count its leading article or number gives (None when unsaid)."""

    words: tuple[str, ...]
    count: int | None

    @property
    def text(self) -> str:
        return " ".join(self.words)


def normalize(prompt: str) -> str:
    """Lower case, single spaces, no trailing full stop."""
    return " ".join(prompt.lower().split()).strip(" .")


def segments(text: str) -> list[Segment]:
    """The noun-phrase segments of `text` (relation phrases are treated as breaks)."""
    text = _REL_PATTERN.sub(" | ", normalize(text))
    out: list[Segment] = []
    words: list[str] = []
    count: int | None = None
    tokens = _WORD.findall(text)
    opened = False  # the current phrase began with an article, number or determiner
    for i, token in enumerate(tokens):
        if token == "," and len(words) == 1 and _starts_word(tokens[i + 1:]):
            continue  # "the soft, fluffy texture": a list of adjectives, one phrase
        starts = _is_count(token) or token in DETERMINERS
        if (_is_break(token, words, opened, tokens[i + 1:i + 2])
                or (starts and words)) and not _joins_of(token, words, tokens[i + 1:]):
            _flush(out, words, count)
            words, count, opened = [], None, False
            if not starts:
                continue
        if not words and not opened and len(token) > 5 and token.endswith("ly"):
            continue  # a lone adverb ("floated lazily in the sky")
        if not words and starts:
            opened = True
            if count is None and _is_count(token):
                count = NUMBERS.get(token) or SINGLE.get(token) or int(token)
        else:
            words.append(token)
    _flush(out, words, count)
    return out


def _is_count(token: str) -> bool:
    return token in NUMBERS or token in SINGLE or token.isdigit()


def _starts_word(rest: list[str]) -> bool:
    """Whether the next token continues a noun phrase (a plain word, not a new one's start)."""
    if not rest:
        return False
    nxt = rest[0]
    return (re.match(r"[a-z]", nxt) is not None and nxt not in _BREAK_WORDS
            and nxt not in DETERMINERS and not _is_count(nxt))


def _is_break(token: str, words: list[str], opened: bool, nxt: list[str]) -> bool:
    """Whether `token` ends (or, as a phrase's first word, is no part of) a noun phrase. "-ing" and
    "-ed" words right after an article or number are nouns or adjectives ("a painting", "a tiled
    floor"); elsewhere they are verbs ("is playing", "a dog running", "clouds floated lazily")
    unless a plain word follows inside a phrase ("a parking sign")."""
    first = opened and not words
    if not re.match(r"[a-z0-9]", token):
        return True  # punctuation and the relation marker
    if token in _BREAK_WORDS:
        return True
    if token in _NOT_VERBS or len(token) <= 4 or first or token.endswith("eed"):
        return False
    if not token.endswith(("ing", "ed")):
        return False
    return not words or not _starts_word(nxt) or nxt[0].endswith("ly")


def _joins_of(token: str, words: list[str], rest: list[str]) -> bool:
    """"of" followed by a bare noun stays inside the phrase ("a slice of bread")."""
    return token == "of" and bool(words) and _starts_word(rest[:1])


def _flush(out: list[Segment], words: list[str], count: int | None) -> None:
    if words:
        out.append(Segment(tuple(words), count))


def noun_phrases(prompt: str) -> list[str]:
    """The prompt's noun phrases with their attributes, articles and numbers dropped, in order and
    without repeats: "a blue bench and a green bowl" -> ["blue bench", "green bowl"]."""
    return _unique(s.text for s in segments(prompt))


def singular(noun: str) -> str:
    """A plural noun's singular by simple English rules ("strawberries" -> "strawberry")."""
    if noun in _IRREGULAR:
        return _IRREGULAR[noun]
    if noun in _UNCHANGED or len(noun) <= 3 or not noun.endswith("s") or noun.endswith(
            ("ss", "us", "is")):
        return noun
    if noun.endswith("ies"):
        return noun[:-3] + "y"
    if noun.endswith(("ches", "shes", "xes", "zes", "sses", "oes")) and noun not in _OES:
        return noun[:-2]
    return noun[:-1]


def counted_objects(prompt: str) -> list[tuple[str, int | None]]:
    """Each object the prompt names and how many it asks for ("three apples and two dogs" ->
    [("apple", 3), ("dog", 2)]). "a"/"an" count one; a plural with no number counts None. A
    counted plural's last word is made singular; attributes stay ("two red apples" -> "red apple")."""
    out: list[tuple[str, int | None]] = []
    for seg in segments(prompt):
        words = list(seg.words)
        if seg.count is not None and seg.count > 1:
            head = words.index("of") - 1 if "of" in words else -1  # "two bottles of water"
            words[head] = singular(words[head])
        out.append((" ".join(words), seg.count))
    return out


def spatial_relation(prompt: str) -> Relation | None:
    """The first spatial relation in the prompt: the last noun phrase before the relation phrase,
    the canonical relation, the first noun phrase after it; None when there is none."""
    text = normalize(prompt)
    match = _REL_PATTERN.search(text)
    if match is None:
        return None
    before, after = segments(text[:match.start()]), segments(text[match.end():])
    if not before or not after:
        return None
    return Relation(before[-1].text, RELATIONS[match.group(1)], after[0].text)


def _unique(items) -> list[str]:
    return list(dict.fromkeys(items))


# ----------------------------------------------------------------------------- exact scenes


def scene_noun(scene: Scene, object_id: int, prompt: str | None = None) -> str:
    """The noun phrase of the scene object with id `object_id`: color, texture word, shape ("red
    striped circle"); with `prompt`, only the attribute words the prompt itself says."""
    from annotators.scene.vocab import TEXTURE_WORDS

    obj = next(o for o in scene.objects if o.id == object_id)
    said = set(_WORD.findall(normalize(prompt))) if prompt is not None else None
    attrs = [obj.color, TEXTURE_WORDS.get(obj.texture, obj.texture)]
    words = [w for w in attrs if w and (said is None or w in said)]
    return " ".join([*words, obj.shape])


def scene_phrases(scene: Scene, prompt: str | None = None) -> list[str]:
    """The distinct object noun phrases of a scene, in object order."""
    return _unique(scene_noun(scene, o.id, prompt) for o in scene.objects)


def scene_objects(scene: Scene, prompt: str | None = None) -> list[tuple[str, int | None]]:
    """Each distinct object of a scene with how many of it the scene asks for."""
    counts: dict[str, int] = {}
    for obj in scene.objects:
        name = scene_noun(scene, obj.id, prompt)
        counts[name] = counts.get(name, 0) + 1
    return list(counts.items())


def scene_relation(scene: Scene, prompt: str | None = None) -> Relation | None:
    """The scene's first relation, with canonical relation name, or None."""
    if not scene.relations:
        return None
    rel = scene.relations[0]
    name = RELATIONS.get(rel.relation, rel.relation)
    return Relation(scene_noun(scene, rel.subject, prompt), name,
                    scene_noun(scene, rel.object, prompt))
