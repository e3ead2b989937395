"""The feedback turn of the chemistry tasks: what RDKit objects to in a SMILES answer, or how a
valid answer is wrong, as the next user turn of a self-repair episode.

What it says comes from the answer and the prompt alone: RDKit's parse, valence, kekulisation
and aromaticity problems (with the flagged characters), the answer's molecular formula, atoms the
reactants cannot account for (the reactants or the product are the prompt's). Of the comparison
with the reference it keeps only the verdict -- close to the molecule asked for, or far from it --
never the reference's SMILES, size or atom environments (the certificate's "unrelated" messages
name them; a turn must not hand the model the answer).
"""

from __future__ import annotations

import re

from rlsf.chem.answer import find_answer
from rlsf.feedback.certificate import Certificate, Span

#: What each chemistry task asks for, and how it asks for the answer again.
ASKED = {
    "molgen": ("it is not the molecule the description asks for", "Answer again with the corrected SMILES only."),
    "forward": ("it is not the product of this reaction", "Answer again with the product's SMILES only."),
    "retro": ("these are not the reactants that make this product",
              "Answer again with the reactants' SMILES only, separated by '.'."),
}
_GENERIC = ("it is not the molecule asked for", "Answer again with the corrected SMILES only.")
_SHOWN = 120  # characters of a SMILES quoted
_PLACES = 8  # flagged places listed per problem
_UNRELATED = "unrelated to the reference"
_UNEXPLAINED = "the reactants cannot account for"


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _formula(smiles: str) -> str:
    """The molecular formula of a valid SMILES ("" when RDKit cannot give one)."""
    from rlsf.chem.smiles import parse

    try:
        from rdkit.Chem.rdMolDescriptors import CalcMolFormula

        mol = parse(smiles)
        return CalcMolFormula(mol) if mol is not None else ""
    except Exception:  # noqa: BLE001  (a feedback turn never raises on model text)
        return ""


def _places(completion: str, spans: list[Span], start: int) -> str:
    """The flagged characters of the SMILES, with their positions (1-based) in it."""
    seen = list(dict.fromkeys((s.start, s.end) for s in spans if s.end > s.start))
    shown = [f"`{_clip(completion[a:b])}` at character {a - start + 1}" for a, b in seen[:_PLACES]]
    more = f" and {len(seen) - _PLACES} more" if len(seen) > _PLACES else ""
    return ", ".join(shown) + more


def _problem(message: str, smiles: str) -> str:
    """RDKit's message, without the SMILES it repeats ("syntax error while parsing: CC(C") and
    without the length limit (derived from the reference's length: only "too long" is said)."""
    if smiles and message.endswith(smiles):
        message = message[: -len(smiles)].rstrip(": ")
    message = re.sub(r"^SMILES of ([0-9]+) characters \(more than [0-9]+\)$", r"the SMILES is too long (\1 characters)",
                     message)
    return message if len(message) <= 2 * _SHOWN else message[: 2 * _SHOWN - 3] + "..."


def feedback_turn(task: str, completion: str, certificate: Certificate) -> str | None:
    """The turn for a chemistry ``task`` (``molgen``, ``forward``, ``retro``; others get generic
    words) after a wrong attempt; ``None`` where the default turn applies (a correct answer, no
    attempt, a failed check, no SMILES found)."""
    where = find_answer(completion) if isinstance(completion, str) else None
    if certificate.correct or not certificate.attempted or certificate.failed or where is None:
        return None
    asked, request = ASKED.get(task, _GENERIC)
    start, end = where
    smiles = completion[start:end]
    errors = sorted((s for s in certificate.errors()), key=lambda s: s.start)
    problems: dict[str, list[Span]] = {}
    unexplained: dict[str, list[Span]] = {}
    for s in errors:
        if s.message.startswith(_UNEXPLAINED):
            unexplained.setdefault(s.message, []).append(s)
        elif s.message and not s.message.startswith(_UNRELATED):
            problems.setdefault(_problem(s.message, smiles), []).append(s)
    v = certificate.verdict
    if problems or v in ("syntax_error", "chemistry_error", "too_long"):
        reads = "cannot read" if v == "syntax_error" else "does not read" if v == "too_long" else "reads but rejects"
        lines = [f"RDKit {reads} your SMILES `{_clip(smiles)}`:"]
        for message, spans in problems.items():
            whole = len(spans) == 1 and spans[0].end - spans[0].start == len(smiles)
            where = "" if whole or message.startswith("the SMILES is too long") else _places(completion, spans, start)
            lines.append(f"- {message}" + (f" ({where})" if where else ""))
    else:
        formula = _formula(smiles)
        lines = [f"Your SMILES `{_clip(smiles)}` is valid" + (f" ({formula})" if formula else "") + f", but {asked}"
                 + (": it is far from it, most of its atoms do not fit." if v == "unrelated"
                    else "; the answer is close: check its atoms and bonds." if v == "wrong" else ".")]
    for note, spans in unexplained.items():
        whole = len(spans) == 1 and spans[0].start <= start and spans[0].end >= end
        lines.append(f"- {note}" + ("" if whole else f" ({_places(completion, spans, start)})"))
    lines.append(request)
    return "\n".join(lines)
