"""SMILES, atom by atom: where a model's SMILES is wrong, in characters of the SMILES.

RDKit numbers atoms in the order their tokens appear in the SMILES, so atom ``i`` is the
``i``-th atom token of :func:`tokenize`. :func:`diagnose` parses without sanitising, then asks
RDKit for every problem sanitisation would raise (:func:`rdkit.Chem.DetectChemistryProblems`:
valence, kekulisation, aromaticity), each with its atom indices, and maps them to character
spans. SMILES that do not parse get RDKit's syntax message and the token at the position it
names (unclosed and duplicated ring closures, which RDKit reports without a position, are found
by our own scan of the ring-bond labels).

RDKit's log never reaches the terminal here: :func:`rdkit_log` captures it, and the messages
(timestamps removed) are the problems' messages.
"""

from __future__ import annotations

import logging
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from rlsf.runtime.extras import require

# RDKit is the [chem] extra: without it, one line naming it (pip install 'rlsf[chem]').
Chem = require("rdkit.Chem", "rlsf.chem")
rdBase = require("rdkit.rdBase", "rlsf.chem")

#: Tokens of SMILES (Schwaller et al. 2019's regular expression, with ``%nn`` ring labels and
#: bracket atoms kept whole); anything else is not SMILES.
_TOKEN = re.compile(r"\[[^\[\]\s]*\]|Br|Cl|[BCNOSPFIbcnosp*]|\(|\)|\.|=|#|-|\+|\\|/|:|~|@|\?|>|\$|%\d\d|\d", re.ASCII)
_ATOM = re.compile(r"\[[^\[\]\s]*\]|Br|Cl|[BCNOSPFIbcnosp*]$")
_RING = re.compile(r"%\d\d|\d", re.ASCII)
_STAMP = re.compile(r"^\[\d\d:\d\d:\d\d\]\s?")
_POSITION = re.compile(r"check for mistakes around position (\d+)")


@dataclass(frozen=True)
class Token:
    text: str
    start: int  # character offsets in the SMILES
    end: int
    atom: int | None = None  # RDKit's atom index, for atom tokens


@dataclass
class Problem:
    """One thing RDKit (or our scan) objects to, with the atoms and characters it concerns."""

    kind: str  # "syntax", "ring", "valence", "kekulize", "aromaticity", "charset", "length", ...
    message: str
    atoms: tuple[int, ...] = ()
    chars: tuple[tuple[int, int], ...] = ()  # [start, end) in the SMILES


@dataclass
class Diagnosis:
    """What RDKit makes of one SMILES string."""

    smiles: str
    tokens: list[Token]
    problems: list[Problem] = field(default_factory=list)
    mol: "Chem.Mol | None" = None  # sanitised molecule, when there is no problem
    raw: "Chem.Mol | None" = None  # parsed without sanitising (drawable even when invalid)
    log: list[str] = field(default_factory=list)  # RDKit's messages

    @property
    def valid(self) -> bool:
        return self.mol is not None and not self.problems

    def atom_chars(self, atom: int) -> tuple[int, int] | None:
        for t in self.tokens:
            if t.atom == atom:
                return t.start, t.end
        return None


# ---- RDKit's log -------------------------------------------------------------------------------
_local = threading.local()
_installed = False
_install_lock = threading.Lock()


class _Collector(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        stack = getattr(_local, "stack", None)
        if stack:
            stack[-1].append(_STAMP.sub("", record.getMessage()))
        else:  # outside a capture: RDKit's usual behaviour (the terminal)
            logging.lastResort.handle(record)


def _install() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            rdBase.LogToPythonLogger()
            log = logging.getLogger("rdkit")
            log.handlers[:] = [_Collector()]
            log.propagate = False
            log.setLevel(logging.DEBUG)
            _installed = True


_NEEDED = ("rdApp.error", "rdApp.warning")  # the messages certificates quote


@contextmanager
def rdkit_log() -> Iterator[list[str]]:
    """Collect RDKit's log messages (errors and warnings) raised inside the block, instead of
    printing them. Works even where the caller disabled RDKit's log (``RDLogger.DisableLog``):
    the levels it needs are enabled for the block and disabled again after it."""
    _install()
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    status = rdBase.LogStatus()
    off = [name for name in _NEEDED if f"{name}:disabled" in status]
    for name in off:
        rdBase.EnableLog(name)
    messages: list[str] = []
    stack.append(messages)
    try:
        yield messages
    finally:
        stack.pop()
        for name in off:
            rdBase.DisableLog(name)


# ---- tokens ------------------------------------------------------------------------------------
def tokenize(smiles: str) -> tuple[list[Token], int | None]:
    """The tokens of ``smiles`` with atom indices, and the position of the first character that
    is not SMILES (``None`` when every character is)."""
    tokens: list[Token] = []
    pos, atom = 0, 0
    while pos < len(smiles):
        m = _TOKEN.match(smiles, pos)
        if m is None:
            return tokens, pos
        text = m.group()
        if _ATOM.match(text):
            tokens.append(Token(text, pos, m.end(), atom))
            atom += 1
        else:
            tokens.append(Token(text, pos, m.end()))
        pos = m.end()
    return tokens, None


def is_smiles_like(text: str) -> bool:
    """Every character is part of a SMILES token and there is at least one atom."""
    tokens, bad = tokenize(text)
    return bad is None and any(t.atom is not None for t in tokens)


def _ring_problems(tokens: list[Token]) -> list[Problem]:
    """Ring-bond labels left open at the end, and labels closing on the atom that opened them."""
    open_: dict[str, tuple[Token | None, Token]] = {}
    last_atom: Token | None = None
    out: list[Problem] = []
    for t in tokens:
        if t.atom is not None:
            last_atom = t
        elif _RING.fullmatch(t.text):
            if t.text in open_:
                opener, label = open_.pop(t.text)
                if opener is last_atom:
                    chars = ((label.start, label.end), (t.start, t.end))
                    out.append(Problem("ring", f"ring closure {t.text} bonds an atom to itself", (), chars))
            else:
                open_[t.text] = (last_atom, t)
        elif t.text == ".":
            last_atom = None
    for label, (atom, tok) in open_.items():
        chars = ((atom.start, atom.end), (tok.start, tok.end)) if atom is not None else ((tok.start, tok.end),)
        out.append(Problem("ring", f"unclosed ring {label}", (atom.atom,) if atom is not None else (), chars))
    return out


def _token_at(tokens: list[Token], pos: int, length: int) -> tuple[int, int]:
    for t in tokens:
        if t.start <= pos < t.end:
            return t.start, t.end
    return (pos, min(pos + 1, length)) if pos < length else (max(length - 1, 0), length)


# ---- diagnosis ---------------------------------------------------------------------------------
_KINDS = {"AtomValenceException": "valence", "KekulizeException": "kekulize", "AtomKekulizeException": "aromaticity"}


def diagnose(smiles: str, max_chars: int = 0) -> Diagnosis:
    """Every problem RDKit finds in ``smiles``, with atom indices and character spans. Never raises."""
    if max_chars and len(smiles) > max_chars:  # the tokens within the limit only: a huge answer costs nothing
        d = Diagnosis(smiles, tokenize(smiles[:max_chars])[0])
        d.problems.append(Problem("length", f"SMILES of {len(smiles)} characters (more than {max_chars})", (),
                                  ((max_chars, len(smiles)),)))
        return d
    tokens, bad = tokenize(smiles)
    d = Diagnosis(smiles, tokens)
    if bad is not None and not (smiles[bad].isascii() and smiles[bad].isprintable() and not smiles[bad].isspace()):
        # RDKit skips some characters silently (non-ASCII ones), which would shift atom numbers;
        # other ASCII (an unclosed "[", a stray "&") is RDKit's to report, with its position.
        d.problems.append(Problem("charset", f"{smiles[bad]!r} at position {bad + 1} is not part of a SMILES",
                                  (), ((bad, bad + 1),)))
        return d
    with rdkit_log() as log:
        try:
            raw = Chem.MolFromSmiles(smiles, sanitize=False)
        except Exception as e:  # noqa: BLE001 -- RDKit raises on a few inputs instead of returning None
            raw, log = None, [*log, f"{type(e).__name__}: {e}"]
        if raw is None:
            d.log = list(log)
            d.problems.extend(_syntax_problems(smiles, tokens, d.log))
            return d
        if raw.GetNumAtoms() != sum(t.atom is not None for t in tokens):  # never seen; keep the mapping honest
            d.problems.append(Problem("mapping", f"RDKit parsed {raw.GetNumAtoms()} atoms where the SMILES has "
                                      f"{sum(t.atom is not None for t in tokens)} atom tokens", (),
                                      ((0, len(smiles)),)))
        d.raw = raw
        try:
            found = Chem.DetectChemistryProblems(raw)
        except Exception as e:  # noqa: BLE001
            found = []
            d.problems.append(Problem("sanitize", f"{type(e).__name__}: {e}", (), ((0, len(smiles)),)))
        for p in found:
            kind = _KINDS.get(p.GetType(), p.GetType())
            atoms = tuple(p.GetAtomIndices()) if hasattr(p, "GetAtomIndices") else (p.GetAtomIdx(),)
            d.problems.append(Problem(kind, p.Message(), atoms))
        if not d.problems:
            try:
                mol = Chem.MolFromSmiles(smiles)
            except Exception as e:  # noqa: BLE001
                mol = None
                log.append(f"{type(e).__name__}: {e}")
            if mol is None:
                d.problems.append(Problem("sanitize", _last(log) or "RDKit could not sanitise the molecule", (),
                                          ((0, len(smiles)),)))
            d.mol = mol
        d.log = list(log)
    by_atom = {t.atom: (t.start, t.end) for t in tokens if t.atom is not None}
    for p in d.problems:
        if p.atoms and not p.chars:
            p.chars = tuple(by_atom[a] for a in p.atoms if a in by_atom)
    return d


def _last(log: list[str]) -> str:
    return log[-1] if log else ""


def _syntax_problems(smiles: str, tokens: list[Token], log: list[str]) -> list[Problem]:
    text = "; ".join(m for m in log if "Parse Error" in m and "Failed parsing" not in m)
    message = re.sub(r"SMILES Parse Error:\s*", "", text) or _last(log) or "RDKit cannot parse the SMILES"
    message = re.sub(r"\s*for input: '.*'$", "", message)
    if "ring" in message:
        rings = _ring_problems(tokens)
        if rings:
            for r in rings:  # RDKit's words, and which label
                r.message = message if "ring closure" in message else f"{message}: {r.message}"
            return rings
    pos = _POSITION.search(text)
    if pos is not None:
        where = int(pos.group(1)) - 1  # RDKit counts from 1
        return [Problem("syntax", message.split("; check for")[0], (), (_token_at(tokens, where, len(smiles)),))]
    if not smiles:
        return [Problem("syntax", message, (), ())]
    return [Problem("syntax", message, (), ((0, len(smiles)),))]


# ---- identity ----------------------------------------------------------------------------------
def canonical(mol: "Chem.Mol", stereo: bool = True) -> str:
    """Canonical SMILES with dot-separated components sorted (their order carries no meaning)."""
    with rdkit_log():
        text = Chem.MolToSmiles(mol, isomericSmiles=stereo)
    return ".".join(sorted(text.split(".")))


def parse(smiles: str) -> "Chem.Mol | None":
    """A sanitised molecule, or ``None``; quiet."""
    with rdkit_log():
        try:
            return Chem.MolFromSmiles(smiles)
        except Exception:  # noqa: BLE001
            return None


def heavy_atom_counts(mol: "Chem.Mol") -> dict[str, int]:
    """Heavy atoms per element (hydrogens, explicit or not, are not counted)."""
    out: dict[str, int] = {}
    for a in mol.GetAtoms():
        if a.GetAtomicNum() > 1:
            out[a.GetSymbol()] = out.get(a.GetSymbol(), 0) + 1
    return out


def unexplained_atoms(product: "Chem.Mol", sources: "Chem.Mol") -> dict[str, list[int]]:
    """Atoms of ``product`` that ``sources`` cannot account for, per element.

    Each heavy atom of the product must come from a heavy atom of the same element in the
    sources. Where the product has ``n`` atoms of an element and the sources ``m < n``, the last
    ``n - m`` of them (in SMILES order) are the unexplained ones.
    """
    have = heavy_atom_counts(sources)
    seen: dict[str, list[int]] = {}
    for a in product.GetAtoms():
        if a.GetAtomicNum() > 1:
            seen.setdefault(a.GetSymbol(), []).append(a.GetIdx())
    return {el: idx[have.get(el, 0):] for el, idx in seen.items() if len(idx) > have.get(el, 0)}


# ---- the readable part of an unparsable SMILES -------------------------------------------------
_BONDS = {"-", "=", "#", "$", ":", "/", "\\", "~", "."}


def salvage(d: Diagnosis) -> "Chem.Mol | None":
    """The molecule RDKit can read from a SMILES it cannot parse, unsanitised: the tokens before the
    first syntax problem, less the ring labels that do not close there (or close on their own atom),
    unmatched ``)`` and dangling bonds, with open branches closed. Atom ``i`` is the ``i``-th atom
    token of the SMILES. ``d.raw`` when the SMILES parses; ``None`` when nothing readable is left."""
    if d.raw is not None:
        return d.raw
    if any(p.kind == "length" for p in d.problems):
        return None
    stop = min((s for p in d.problems if p.kind in ("syntax", "charset", "mapping") for s, _ in p.chars),
               default=len(d.smiles))
    tokens = [t for t in d.tokens if t.end <= stop]
    drop: set[int] = set()
    opened: dict[str, tuple[int, int | None]] = {}  # ring label -> (token position, atom that opened it)
    last_atom: int | None = None
    for i, t in enumerate(tokens):
        if t.atom is not None:
            last_atom = t.atom
        elif _RING.fullmatch(t.text):
            if t.text in opened:
                j, atom = opened.pop(t.text)
                if atom == last_atom:  # closes on the atom that opened it
                    drop |= {i, j}
            else:
                opened[t.text] = (i, last_atom)
        elif t.text == ".":
            last_atom = None
    drop |= {j for j, _ in opened.values()}
    kept: list[str] = []
    depth = 0
    for i, t in enumerate(tokens):
        if i in drop:
            continue
        if t.text == ")":
            if depth == 0 or (kept and kept[-1] == "("):  # unmatched, or an empty branch
                if kept and kept[-1] == "(":
                    kept.pop()
                    depth -= 1
                continue
            depth -= 1
        elif t.text == "(":
            depth += 1
        kept.append(t.text)
    while kept and (kept[-1] in _BONDS or kept[-1] == "("):
        depth -= kept.pop() == "("
    text = "".join(kept) + ")" * depth
    atoms = sum(1 for t in tokens if t.atom is not None)
    if not atoms or sum(1 for i, t in enumerate(tokens) if t.atom is not None and i not in drop) != atoms:
        return None
    with rdkit_log():
        try:
            mol = Chem.MolFromSmiles(text, sanitize=False)
        except Exception:  # noqa: BLE001
            return None
    return mol if mol is not None and mol.GetNumAtoms() == atoms else None
