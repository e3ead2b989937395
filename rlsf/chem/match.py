"""Which atoms of an answer the reference has: atom neighbourhoods matched one to one.

An atom's *neighbourhood* is its element, aromaticity, charge and ring membership with the bonds to
its heavy neighbours (bond order, the neighbour's element and aromaticity): a Morgan radius-1
environment without hydrogen counts, so that it is defined on a molecule RDKit cannot sanitise (a
valence error, a ring that does not kekulise, the part of a SMILES before a syntax error). An
answer's atom *matches* when the reference has an atom with the same neighbourhood that no earlier
atom of the answer took (a multiset intersection, in SMILES order: an alkane twice as long as the
reference's chain matches along the chain's length and no further).

:func:`match` gives the matched and unmatched atoms and the similarity of the answer to the
reference: the mean of the Tanimoto similarities of the two neighbourhood multisets (``matched /
(answer atoms + reference atoms - matched)``) and of the two multisets of bare atoms (element,
aromaticity, charge, ring membership, number of heavy neighbours; radius 0, which keeps a small
molecule with one atom changed -- all its neighbourhoods changed -- above an unrelated one). It is 1
for the same atoms in the same neighbourhoods and low for an answer of another size or another
chemistry. One slip (an atom of another element, a bond of another order, an atom added or left
out) changes the neighbourhoods of that atom and its neighbours only, at most five atoms.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from rlsf.chem.smiles import rdkit_log
from rlsf.runtime.extras import require

Chem = require("rdkit.Chem", "rlsf.chem")

Key = tuple


def prepared(mol: "Chem.Mol") -> "Chem.Mol":
    """A copy of ``mol`` (unsanitised or not) with aromaticity perceived where RDKit can, so that a
    Kekulé ring and an aromatic one have the same neighbourhoods; as written where it cannot."""
    with rdkit_log():
        m = Chem.Mol(mol)
        try:
            m.UpdatePropertyCache(strict=False)
            ops = Chem.SanitizeFlags.SANITIZE_ALL ^ Chem.SanitizeFlags.SANITIZE_PROPERTIES
            if Chem.SanitizeMol(m, ops, catchErrors=True) == Chem.SanitizeFlags.SANITIZE_NONE:
                return m
        except Exception:  # noqa: BLE001 -- RDKit raises on a few broken molecules
            pass
        m = Chem.Mol(mol)
        Chem.FastFindRings(m)
        return m


def neighbourhoods(mol: "Chem.Mol") -> list[Key | None]:
    """The neighbourhood of each atom (module docstring), by atom index; ``None`` for hydrogens.
    ``mol`` needs ring information (:func:`prepared` gives it)."""
    ring = mol.GetRingInfo()
    out: list[Key | None] = []
    for a in mol.GetAtoms():
        if a.GetAtomicNum() == 1:
            out.append(None)
            continue
        bonds = sorted((b.GetBondTypeAsDouble(), n.GetAtomicNum(), n.GetIsAromatic())
                       for b in a.GetBonds() if (n := b.GetOtherAtom(a)).GetAtomicNum() != 1)
        out.append((a.GetAtomicNum(), a.GetIsAromatic(), a.GetFormalCharge(), ring.NumAtomRings(a.GetIdx()) > 0,
                    tuple(bonds)))
    return out


def bare(key: Key) -> Key:
    """The radius-0 part of a neighbourhood: the atom and how many heavy neighbours it has."""
    return (*key[:4], len(key[4]))


def describe(key: Key) -> str:
    """A neighbourhood in words, for messages: ``C bonded to C, =O``."""
    table = Chem.GetPeriodicTable()
    symbol = table.GetElementSymbol(key[0])
    symbol = symbol.lower() if key[1] else symbol
    marks = {1.0: "", 1.5: ":", 2.0: "=", 3.0: "#"}
    names = [table.GetElementSymbol(z) for _, z, _ in key[4]]
    around = ", ".join(f"{marks.get(order, '~')}{name.lower() if arom else name}"
                       for (order, _, arom), name in zip(key[4], names))
    charge = f"{key[2]:+d}" if key[2] else ""
    return f"{symbol}{charge} bonded to {around}" if around else f"{symbol}{charge} alone"


@dataclass
class Match:
    """An answer's atoms against a reference's (module docstring)."""

    answer_atoms: int  # heavy atoms of the answer (atoms after a syntax error included)
    reference_atoms: int
    matched: list[int] = field(default_factory=list)  # atom indices of the answer, SMILES order
    unmatched: list[int] = field(default_factory=list)
    keys: list[Key | None] = field(default_factory=list)  # the answer's neighbourhoods, by atom index
    bare_matched: int = 0  # atoms matched on their radius-0 part alone

    def _tanimoto(self, m: int) -> float:
        union = self.answer_atoms + self.reference_atoms - m
        return m / union if union > 0 else 0.0

    @property
    def similarity(self) -> float:
        """Mean of the radius-1 and radius-0 Tanimoto similarities (module docstring), in [0, 1]."""
        return (self._tanimoto(len(self.matched)) + self._tanimoto(self.bare_matched)) / 2

    @property
    def missing(self) -> int:
        """Reference atoms no atom of the answer matched."""
        return self.reference_atoms - len(self.matched)


def match(mol: "Chem.Mol", reference: Counter, reference_atoms: int, extra_atoms: int = 0) -> Match:
    """Match the atoms of ``mol`` against the neighbourhood multiset ``reference`` (of a molecule of
    ``reference_atoms`` heavy atoms); ``extra_atoms``: answer atoms not in ``mol`` (after a syntax
    error), which match nothing."""
    keys = neighbourhoods(prepared(mol))
    left = Counter(reference)
    out = Match(sum(k is not None for k in keys) + extra_atoms, reference_atoms, keys=keys)
    for i, k in enumerate(keys):
        if k is None:
            continue
        if left[k] > 0:
            left[k] -= 1
            out.matched.append(i)
        else:
            out.unmatched.append(i)
    mine = Counter(bare(k) for k in keys if k is not None)
    theirs = Counter(bare(k) for k in reference.elements())
    out.bare_matched = sum((mine & theirs).values())
    return out


def reference_neighbourhoods(mol: "Chem.Mol") -> tuple[Counter, int]:
    """The neighbourhood multiset of a reference molecule and its number of heavy atoms."""
    keys = [k for k in neighbourhoods(prepared(mol)) if k is not None]
    return Counter(keys), len(keys)
