"""Referring expressions: structured specs, their text, a parser back to specs, and the checker.

A `Spec` names a target class (the raw category) and narrows it down with a colour, a location
in the room, one relation to anchor objects (next to, left / right of as seen from the middle of
the room, on, under, above, between two anchors) and at most one superlative (largest,
smallest, closest to an anchor). Anchors hold existentially: "next to the table" means next to
some table. `resolve` evaluates a spec on a `SceneView`; with `CLEAR` strictness an object
within a safety margin of any threshold makes the spec undecided, so the generator keeps only
specs that single out their target by a clear margin, while the checker (`EXACT`) parses the
text alone and evaluates it on the scene as read back from the files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from uniseg3d.datasets.synthetic.catalog import COLOUR_NAMES, NOUNS
from uniseg3d.datasets.synthetic.relations import LOCATIONS, RELATIONS, SceneView

SUPERLATIVES = ("largest", "smallest")
OPENERS = ("this is", "find", "look for", "the target is", "there is")  # not "there is the"
VERBS = ("it is", "it stands", "it is placed", "you can find it")
LOCATION_PHRASES = {
    "corner": ("in the corner of the room", "in a corner of the room"),
    "window": ("by the window", "near the window"),
    "door": ("near the door", "close to the door"),
    "middle": ("in the middle of the room", "in the center of the room"),
}
RELATION_PHRASES = {
    "next to": ("next to", "beside"), "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"), "on": ("on top of", "on"),
    "under": ("under", "below", "underneath"), "above": ("above", "over"),
}
RELATION_GROUPS = {"next to": "near", "left of": "side", "right of": "side", "on": "vertical",
                   "under": "vertical", "above": "vertical"}
"""Relations grouped by kind, so that descriptions of one object mix the kinds."""
VIEWPOINTS = ("as seen from the middle of the room", "when seen from the middle of the room")


@dataclass(frozen=True)
class Anchor:
    noun: str
    colour: str | None = None


@dataclass(frozen=True)
class Spec:
    noun: str
    colour: str | None = None
    superlative: str | None = None  # "largest" or "smallest"
    location: str | None = None  # one of LOCATIONS
    relation: str | None = None  # one of RELATIONS, "between" or "closest to"
    anchors: tuple[Anchor, ...] = ()


@dataclass(frozen=True)
class Strictness:
    score: float  # predicate scores within +-score of 0 leave a spec undecided
    volume_ratio: float  # a superlative's winner must beat the runner-up by this ratio
    distance_gap: float  # "closest to": by this many metres


EXACT = Strictness(0.0, 1.0, 0.0)
CLEAR = Strictness(0.05, 1.3, 0.3)


def _anchor_score(view: SceneView, anchor: Anchor) -> np.ndarray:
    score = np.where(np.array(view.names) == anchor.noun, np.inf, -np.inf)
    if anchor.colour is not None:
        score = np.minimum(score, view.colour_fraction[:, COLOUR_NAMES.index(anchor.colour)] - 0.5)
    return score


def _predicate_scores(spec: Spec, view: SceneView, candidates: np.ndarray) -> np.ndarray:
    score = np.full(len(candidates), np.inf)
    if spec.colour is not None:
        score = np.minimum(score, view.colour_fraction[candidates,
                                                       COLOUR_NAMES.index(spec.colour)] - 0.5)
    if spec.location is not None:
        score = np.minimum(score, view.location[spec.location][candidates])
    if spec.relation in RELATIONS:
        anchor = _anchor_score(view, spec.anchors[0])
        related = np.minimum(view.relation[spec.relation][candidates], anchor[None])
        score = np.minimum(score, related.max(axis=1, initial=-np.inf))
    elif spec.relation == "between":
        first, second = (_anchor_score(view, a) for a in spec.anchors)
        pairs = np.minimum(np.minimum(first[:, None], second[None]), view.between[candidates])
        score = np.minimum(score, pairs.reshape(len(candidates), -1).max(axis=1, initial=-np.inf))
    return score


def resolve(spec: Spec, view: SceneView, strict: Strictness = EXACT) -> set[int] | None:
    """Object ids the spec picks out; None when undecided at this strictness."""
    candidates = np.flatnonzero(np.array(view.names) == spec.noun)
    score = _predicate_scores(spec, view, candidates)
    if ((score > -strict.score) & (score <= strict.score)).any():
        return None
    chosen = candidates[score > strict.score]
    if spec.superlative is not None or spec.relation == "closest to":
        if spec.relation == "closest to":
            anchor = _anchor_score(view, spec.anchors[0])
            if ((anchor > -strict.score) & (anchor <= strict.score)).any():
                return None
            reach = np.where(anchor[None] > strict.score, view.distance[chosen], np.inf)
            reach[np.arange(len(chosen)), chosen] = np.inf  # an object is not its own anchor
            key, gap = -reach.min(axis=1, initial=np.inf), strict.distance_gap
        else:
            volume = np.log(view.volume[chosen])
            key = volume if spec.superlative == "largest" else -volume
            gap = np.log(strict.volume_ratio)
        ranked = np.sort(key)[::-1]
        if strict.score > 0 and (len(ranked) < 2 or ranked[0] - ranked[1] < gap):
            return None  # a clear superlative needs a runner-up it clearly beats
        chosen = chosen[key == key.max()] if len(key) else chosen
    return set(view.object_ids[chosen].tolist())


# generation ----------------------------------------------------------------------------------

def _clear_colour(view: SceneView, k: int) -> str | None:
    colour = view.colour(k)
    return colour if view.colour_fraction[k, COLOUR_NAMES.index(colour)] > 0.5 + CLEAR.score \
        else None


def _candidates(view: SceneView, t: int) -> dict[str, list[Spec]]:
    """Specs that might single out object t, by kind of description."""
    noun, colour = view.names[t], _clear_colour(view, t)
    base = Spec(noun)
    coloured = [replace(base, colour=colour)] if colour else []
    groups: dict[str, list[Spec]] = {"colour": coloured}
    groups["size"] = [replace(s, superlative=sup) for s in [base, *coloured]
                      for sup in SUPERLATIVES]
    groups["location"] = [replace(s, location=loc) for s in [base, *coloured] for loc in LOCATIONS
                          if view.location[loc][t] > CLEAR.score]
    anchors = [a for a in np.flatnonzero(view.describable()) if view.names[a] != noun]
    related: dict[str, list[Spec]] = {group: [] for group in RELATION_GROUPS.values()}
    closest = []
    for a in anchors:
        anchor_colour = _clear_colour(view, a)
        choices = [Anchor(view.names[a])] + ([Anchor(view.names[a], anchor_colour)]
                                              if anchor_colour else [])
        for relation in RELATIONS:
            if view.relation[relation][t, a] > CLEAR.score:
                related[RELATION_GROUPS[relation]] += [
                    replace(s, relation=relation, anchors=(c,))
                    for s in [base, *coloured] for c in choices]
        closest.append(replace(base, relation="closest to", anchors=(Anchor(view.names[a]),)))
    groups.update(related)
    groups["closest"] = list(dict.fromkeys(closest))
    pairs = np.argwhere(view.between[t][np.ix_(anchors, anchors)] > CLEAR.score)
    groups["between"] = [replace(base, relation="between", anchors=(
        Anchor(view.names[anchors[i]]), Anchor(view.names[anchors[j]]))) for i, j in pairs if i < j]
    return groups


def describe_object(view: SceneView, t: int, count: int, rng: np.random.Generator
                    ) -> list[Spec]:
    """Up to `count` specs that single out object t clearly, of as many kinds as possible."""
    target = {int(view.object_ids[t])}
    pools = {name: [specs[i] for i in rng.permutation(len(specs))]
             for name, specs in _candidates(view, t).items() if specs}
    chosen: list[Spec] = []
    order = list(rng.permutation(sorted(pools)))
    while order and len(chosen) < count:
        name = order.pop(0)
        pool = pools[name]
        while pool:
            spec = pool.pop(0)
            if resolve(spec, view, CLEAR) == target:
                chosen.append(spec)
                break
        if pool:
            order.append(name)
    return chosen


# text ----------------------------------------------------------------------------------------

def plural(noun: str) -> str:
    if noun.endswith("f"):
        return noun[:-1] + "ves"
    return noun + ("es" if noun.endswith(("s", "sh", "ch", "x")) else "s")


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _anchor_text(anchor: Anchor) -> str:
    return f"the {anchor.colour + ' ' if anchor.colour else ''}{anchor.noun}"


def render(spec: Spec, rng: np.random.Generator) -> str:
    """The description of a spec: lower-case sentences in the style of ScanRefer."""
    words = [w for w in (spec.superlative, spec.colour, spec.noun) if w]
    article = "the" if spec.superlative else ("an" if words[0][0] in "aeiou" else "a")
    first = f"{_pick(rng, OPENERS[:-1] if spec.superlative else OPENERS)} {article} " \
            f"{' '.join(words)}"
    if spec.superlative and rng.random() < 0.5:
        first += " in the room"
    clauses = []
    if spec.location is not None:
        phrase = _pick(rng, LOCATION_PHRASES[spec.location])
        if spec.superlative is None and rng.random() < 0.5:
            first += f" {phrase}"
        else:
            clauses.append(f"{_pick(rng, VERBS)} {phrase}")
    if spec.relation == "closest to":
        clauses.append(f"it is the one closest to {_anchor_text(spec.anchors[0])}")
    elif spec.relation == "between":
        a, b = spec.anchors
        pair = f"two {plural(a.noun)}" if a == b else f"{_anchor_text(a)} and {_anchor_text(b)}"
        clauses.append(f"{_pick(rng, VERBS)} between {pair}")
    elif spec.relation is not None:
        clause = f"{_pick(rng, VERBS)} {_pick(rng, RELATION_PHRASES[spec.relation])} " \
                 f"{_anchor_text(spec.anchors[0])}"
        if spec.relation in ("left of", "right of"):
            clause += f" {_pick(rng, VIEWPOINTS)}"
        clauses.append(clause)
    clauses = [clauses[i] for i in rng.permutation(len(clauses))]
    return ". ".join([first, *clauses]) + "."


def tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z]+|[^\sa-z]", text.lower())


def _alternatives(options: Iterable[str]) -> str:
    return "|".join(re.escape(o) for o in sorted(options, key=len, reverse=True))


_NOUN, _COLOUR = _alternatives(NOUNS), _alternatives(COLOUR_NAMES)
_ANCHOR = rf"the (?:({_COLOUR}) )?({_NOUN})"
_VERB = _alternatives(VERBS)
_LOCATION = _alternatives(p for ps in LOCATION_PHRASES.values() for p in ps)
_FIRST = re.compile(rf"(?:{_alternatives(OPENERS)}) (?:a|an|the) (?:({_alternatives(SUPERLATIVES)})"
                    rf" )?(?:({_COLOUR}) )?({_NOUN})(?: ({_LOCATION}))?(?: in the room)?")
_LOCATED = re.compile(rf"(?:{_VERB}) ({_LOCATION})")
_RELATION = _alternatives(p for ps in RELATION_PHRASES.values() for p in ps)
_RELATED = re.compile(rf"(?:{_VERB}) ({_RELATION}) {_ANCHOR}(?: (?:{_alternatives(VIEWPOINTS)}))?")
_BETWEEN = re.compile(rf"(?:{_VERB}) between (?:{_ANCHOR} and {_ANCHOR}|two "
                      rf"({_alternatives(plural(n) for n in NOUNS)}))")
_CLOSEST = re.compile(rf"it is the one closest to {_ANCHOR}")


def _lookup(table: dict[str, tuple[str, ...]], phrase: str) -> str:
    return next(key for key, phrases in table.items() if phrase in phrases)


def parse(text: str) -> Spec:
    """The spec a description states (ValueError if the text is not in the grammar)."""
    sentences = [s.strip() for s in text.lower().split(".") if s.strip()]
    if not sentences or not (first := _FIRST.fullmatch(sentences[0])):
        raise ValueError(f"cannot parse the first sentence of {text!r}")
    superlative, colour, noun, place = first.groups()
    spec = Spec(noun, colour, superlative,
                _lookup(LOCATION_PHRASES, place) if place else None)
    for sentence in sentences[1:]:
        if match := _LOCATED.fullmatch(sentence):
            spec = replace(spec, location=_lookup(LOCATION_PHRASES, match[1]))
        elif match := _RELATED.fullmatch(sentence):
            spec = replace(spec, relation=_lookup(RELATION_PHRASES, match[1]),
                           anchors=(Anchor(match[3], match[2]),))
        elif match := _BETWEEN.fullmatch(sentence):
            if match[5]:
                noun = next(n for n in NOUNS if plural(n) == match[5])
                anchors = (Anchor(noun), Anchor(noun))
            else:
                anchors = (Anchor(match[2], match[1]), Anchor(match[4], match[3]))
            spec = replace(spec, relation="between", anchors=anchors)
        elif match := _CLOSEST.fullmatch(sentence):
            spec = replace(spec, relation="closest to", anchors=(Anchor(match[2], match[1]),))
        else:
            raise ValueError(f"cannot parse {sentence!r} in {text!r}")
    return spec


def check_description(text: str, view: SceneView) -> set[int]:
    """The ids of the objects a description's text picks out in a scene (the checker)."""
    return resolve(parse(text), view, EXACT) or set()
