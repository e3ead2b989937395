"""Where the SMILES answer is in a completion: after a ``SMILES:`` marker, in backticks, or the
longest SMILES-like chunk (see :mod:`rlsf.tasks.chem` for the rules as the checker states them).

English words are not SMILES even where their letters are SMILES atoms: ``I`` in "I don't know."
is the pronoun, not iodine; "no", "so", "Con" are words (:func:`is_word`). The marker and the
longest-chunk rules skip them, so prose finds no answer at all.
"""

from __future__ import annotations

import re

_MARKER = re.compile(r"(?:SMILES|Answer|Product|Reactants)\s*[:=]\s*", re.I)
_BACKTICKS = re.compile(r"`+([^`\s]+)`+")
_TRIM = ".,;:!?\"'`"
#: Written like a word: a capital and small letters ("No", "Con"), small letters ("so"), or a
#: short run of capitals ("NA", "IDK").
_WORD_SHAPE = re.compile(r"[A-Z]?[a-z]+|[A-Z]{1,4}")
#: One-letter words of English prose that are SMILES atoms.
_PRONOUNS = frozenset({"I"})


def is_word(chunk: str, alone: bool = True) -> bool:
    """``chunk`` is an English word rather than a SMILES: letters only, written like a word, and
    not a valid molecule ("Cl", "Br", "C", "CO" are molecules; "No", "so", "NA", "none" are not).
    ``I`` is a word unless it stands ``alone`` (the whole answer: hydrogen iodide)."""
    if not chunk.isascii() or not chunk.isalpha():
        return False
    if chunk in _PRONOUNS:
        return not alone
    from rlsf.chem.smiles import parse  # here, not at the top: importing the task modules needs no RDKit

    return _WORD_SHAPE.fullmatch(chunk) is not None and parse(chunk) is None


def is_non_answer(chunk: str, alone: bool = True) -> bool:
    """``chunk`` (an answer found in a completion) names no molecule: a word (:func:`is_word`), "N/A",
    or no letter at all ("?", "...", "42")."""
    return is_word(chunk, alone) or chunk.lower() in ("n/a", "n.a.") or not any(c.isalpha() for c in chunk)


def find_answer(completion: str) -> tuple[int, int] | None:
    """``(start, end)`` of the SMILES in ``completion`` (see the module docstring), or ``None``."""
    from rlsf.chem.smiles import is_smiles_like

    def chunk_at(pos: int) -> tuple[int, int] | None:
        m = re.compile(r"\S+").search(completion, pos)
        return _trimmed(m.start(), m.end()) if m else None

    def _trimmed(s: int, e: int) -> tuple[int, int]:
        # Prose around a SMILES: a full stop, comma or quote after it, quotes or parentheses around it.
        # (No SMILES ends with "." and none starts with "(", so nothing of a SMILES is cut.)
        while e > s and completion[e - 1] in _TRIM:
            e -= 1
        while s < e and completion[s] in "\"'`":
            s += 1
        if e - s > 2 and completion[s] == "(" and completion[e - 1] == ")":
            s, e = s + 1, e - 1
        return s, e

    stripped = completion.strip()
    if not stripped:
        return None
    marker = None
    for marker in _MARKER.finditer(completion):
        pass
    if marker is not None:
        found = chunk_at(marker.end())
        if found is not None and not is_non_answer(completion[found[0]:found[1]], alone=False):
            return found
    tick = _BACKTICKS.search(completion)
    if tick is not None:
        return tick.start(1), tick.end(1)
    best: tuple[int, int] | None = None
    for m in re.finditer(r"\S+", completion):
        s, e = _trimmed(m.start(), m.end())
        if (e > s and is_smiles_like(completion[s:e]) and not is_word(completion[s:e], alone=False)
                and (best is None or e - s > best[1] - best[0])):
            best = (s, e)
    if best is None and len(stripped.split()) == 1:  # a lone chunk is the answer, even if it is not SMILES
        s = completion.index(stripped)
        s, e = _trimmed(s, s + len(stripped))
        return (s, e) if e > s else (s, s + len(stripped))
    return best
