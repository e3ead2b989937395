"""One-slip variants of a molecule: the honest near misses of the reward-ordering check.

Each variant changes the reference in one place, deterministically (the last place in SMILES
order where the edit gives a valid molecule, so that the first atoms a model writes stay right):

* ``atom changed``: one atom becomes another element of a compatible valence (C->N, N->O, O->S,
  S->O, halogen->the next halogen, ...);
* ``bond changed``: one chain bond changes order (single->double where both atoms have a
  hydrogen to give, double->single);
* ``atom added``: a methyl on the last atom with a hydrogen;
* ``atom removed``: the last terminal atom (one heavy neighbour, not in a ring) goes.

An ``invalid`` variant (:func:`invalid_variant`) gives one atom a valence it cannot have (a fifth
bond on a carbon): a near miss RDKit rejects, with one atom to blame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from rlsf.chem.smiles import rdkit_log
from rlsf.runtime.extras import require

Chem = require("rdkit.Chem", "rlsf.chem")

#: Element swaps tried for "atom changed", in order.
SWAPS = {6: (7, 8), 7: (8, 6), 8: (16, 7), 16: (8,), 9: (17,), 17: (35, 9), 35: (17, 53), 53: (35,), 5: (6,), 15: (7,),
         14: (6,)}


def _sanitized(rw: Chem.RWMol) -> "Chem.Mol | None":
    with rdkit_log():
        m = rw.GetMol()
        try:
            Chem.SanitizeMol(m)
        except Exception:  # noqa: BLE001
            return None
        return m


def _atom_changed(mol: Chem.Mol) -> Iterator[Chem.Mol]:
    for a in reversed(list(mol.GetAtoms())):
        for z in SWAPS.get(a.GetAtomicNum(), ()):
            rw = Chem.RWMol(mol)
            at = rw.GetAtomWithIdx(a.GetIdx())
            at.SetAtomicNum(z)
            at.SetNoImplicit(False)
            at.SetNumExplicitHs(0)
            if (m := _sanitized(rw)) is not None:
                yield m


def _bond_changed(mol: Chem.Mol) -> Iterator[Chem.Mol]:
    for b in reversed(list(mol.GetBonds())):
        if b.IsInRing() or b.GetIsAromatic():
            continue
        a, c = b.GetBeginAtom(), b.GetEndAtom()
        if b.GetBondType() == Chem.BondType.SINGLE and a.GetTotalNumHs() and c.GetTotalNumHs():
            new = Chem.BondType.DOUBLE
        elif b.GetBondType() == Chem.BondType.DOUBLE:
            new = Chem.BondType.SINGLE
        else:
            continue
        rw = Chem.RWMol(mol)
        rb = rw.GetBondBetweenAtoms(a.GetIdx(), c.GetIdx())
        rb.SetBondType(new)
        rb.SetStereo(Chem.BondStereo.STEREONONE)
        for i in (a.GetIdx(), c.GetIdx()):
            rw.GetAtomWithIdx(i).SetNoImplicit(False)
            rw.GetAtomWithIdx(i).SetNumExplicitHs(0)
        if (m := _sanitized(rw)) is not None:
            yield m


def _atom_added(mol: Chem.Mol) -> Iterator[Chem.Mol]:
    for a in reversed(list(mol.GetAtoms())):
        if a.GetAtomicNum() != 6 or not a.GetTotalNumHs() or a.GetIsAromatic():
            continue
        rw = Chem.RWMol(mol)
        i = rw.AddAtom(Chem.Atom(6))
        rw.AddBond(a.GetIdx(), i, Chem.BondType.SINGLE)
        rw.GetAtomWithIdx(a.GetIdx()).SetNumExplicitHs(0)
        if (m := _sanitized(rw)) is not None:
            yield m


def _atom_removed(mol: Chem.Mol) -> Iterator[Chem.Mol]:
    for a in reversed(list(mol.GetAtoms())):
        if a.GetDegree() != 1 or a.IsInRing() or mol.GetNumAtoms() < 3:
            continue
        rw = Chem.RWMol(mol)
        n = a.GetNeighbors()[0].GetIdx()
        rw.GetAtomWithIdx(n).SetNoImplicit(False)
        rw.GetAtomWithIdx(n).SetNumExplicitHs(0)
        rw.RemoveAtom(a.GetIdx())
        if (m := _sanitized(rw)) is not None:
            yield m


EDITS: dict[str, Callable[[Chem.Mol], Iterator[Chem.Mol]]] = {
    "atom changed": _atom_changed, "bond changed": _bond_changed, "atom added": _atom_added,
    "atom removed": _atom_removed,
}


def one_slip_variants(smiles: str, kinds: tuple[str, ...] = tuple(EDITS),
                      keep: Callable[[Chem.Mol], bool] = lambda m: True) -> dict[str, str]:
    """For each kind of edit (module docstring), the first variant of ``smiles`` that differs from
    it (canonical SMILES) and that ``keep`` accepts, as SMILES; kinds with none are left out."""
    with rdkit_log():
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            return {}
        same = Chem.MolToSmiles(mol)
        out: dict[str, str] = {}
        for kind in kinds:
            for m in EDITS[kind](mol):
                s = Chem.MolToSmiles(m)
                if s != same and keep(m):
                    out[kind] = s
                    break
    return out


def invalid_variant(smiles: str) -> str | None:
    """``smiles`` with one carbon given a fifth bond (a methyl on a carbon with none to spare),
    written without sanitising: invalid at exactly that atom. ``None`` if it has no such carbon."""
    with rdkit_log():
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            return None
        for a in reversed(list(mol.GetAtoms())):
            if a.GetAtomicNum() == 6 and not a.GetIsAromatic() and a.GetTotalNumHs() == 0 and a.GetFormalCharge() == 0:
                rw = Chem.RWMol(mol)
                i = rw.AddAtom(Chem.Atom(6))
                rw.AddBond(a.GetIdx(), i, Chem.BondType.SINGLE)
                m = rw.GetMol()
                try:
                    return Chem.MolToSmiles(m, canonical=False)
                except Exception:  # noqa: BLE001
                    return None
    return None
