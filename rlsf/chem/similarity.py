"""Molecule similarity and the text-to-molecule metrics of ChEBI-20 (MolT5, Edwards et al. 2022).

Fingerprints as MolT5's evaluation computes them: MACCS keys, RDKit's topological fingerprint
(``RDKFingerprint``) and Morgan radius 2 (with counts), each compared by Tanimoto similarity.
The string metrics work on SMILES characters: BLEU (corpus BLEU-4 over characters, NLTK's
``corpus_bleu`` as in MolT5) and Levenshtein distance (mean over examples).
"""

from __future__ import annotations

from rlsf.chem.smiles import rdkit_log
from rlsf.runtime.extras import require

Chem = require("rdkit.Chem", "rlsf.chem")
DataStructs = require("rdkit.DataStructs", "rlsf.chem")
MACCSkeys = require("rdkit.Chem.MACCSkeys", "rlsf.chem")
rdFingerprintGenerator = require("rdkit.Chem.rdFingerprintGenerator", "rlsf.chem")

FINGERPRINTS = ("maccs", "rdk", "morgan")
_morgan = rdFingerprintGenerator.GetMorganGenerator(radius=2)


def fingerprint(mol: Chem.Mol, kind: str):
    with rdkit_log():
        if kind == "maccs":
            return MACCSkeys.GenMACCSKeys(mol)
        if kind == "rdk":
            return Chem.RDKFingerprint(mol)
        if kind == "morgan":
            return _morgan.GetCountFingerprint(mol)
    raise ValueError(f"unknown fingerprint {kind!r}; known: {', '.join(FINGERPRINTS)}")


def fingerprints(mol: Chem.Mol) -> dict:
    """All three fingerprints of ``mol``, by kind (a reference's are computed once and reused)."""
    return {kind: fingerprint(mol, kind) for kind in FINGERPRINTS}


def similarities(mol: Chem.Mol, reference: dict) -> dict[str, float]:
    """``<kind>_sim``: Tanimoto of ``mol``'s fingerprints against ``reference`` (:func:`fingerprints`)."""
    return {f"{kind}_sim": float(DataStructs.TanimotoSimilarity(fingerprint(mol, kind), fp))
            for kind, fp in reference.items()}


def tanimoto(a: Chem.Mol, b: Chem.Mol, kind: str) -> float:
    """Tanimoto similarity of the ``kind`` fingerprints of two molecules, in [0, 1]."""
    return float(DataStructs.TanimotoSimilarity(fingerprint(a, kind), fingerprint(b, kind)))


def levenshtein(a: str, b: str) -> int:
    Levenshtein = require("rapidfuzz.distance", "chemistry metrics").Levenshtein

    return int(Levenshtein.distance(a, b))


def char_bleu(references: list[str], hypotheses: list[str]) -> float:
    """Corpus BLEU-4 over characters (MolT5's SMILES BLEU); 0 for an empty corpus."""
    corpus_bleu = require("nltk.translate.bleu_score", "chemistry metrics").corpus_bleu

    if not references:
        return 0.0
    refs = [[list(r)] for r in references]
    hyps = [list(h) for h in hypotheses]
    return float(corpus_bleu(refs, hyps))
