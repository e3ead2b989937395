"""Pictures chemists can read: answers beside references, with the flagged atoms highlighted.

One row per example: the prompt's molecule where there is one (the reactants of a forward
synthesis, the product of a retrosynthesis), the reference, and the model's answer. Atoms a
certificate flags are red: the atoms of RDKit's problems (drawn from the unsanitised parse, so
an invalid answer still shows where it is wrong), the atoms the reactants do not account for
(on the answer for forward synthesis, on the prompt's product for retrosynthesis) and the
unmatched atoms of an answer unrelated to the reference (the chain of an alkane past the
reference's length). An answer
that does not parse at all is a "?" with the answer and RDKit's message as its legend. Drawn with
RDKit's own 2D drawer (Cairo for PNG, or SVG when the path ends in ``.svg``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlsf.chem.answer import find_answer
from rlsf.chem.smiles import diagnose, rdkit_log
from rlsf.feedback.certificate import Certificate
from rlsf.runtime.extras import require

Chem = require("rdkit.Chem", "rlsf.chem")
rdMolDraw2D = require("rdkit.Chem.Draw.rdMolDraw2D", "rlsf.chem")

RED = (0.95, 0.3, 0.3)


def _drawable(mol: "Chem.Mol | None") -> "Chem.Mol":
    """A copy of ``mol`` the drawer accepts (kekulised if possible); an empty molecule if none."""
    if mol is None:
        return Chem.Mol()
    with rdkit_log():
        m = Chem.Mol(mol)
        try:
            m.UpdatePropertyCache(strict=False)
        except Exception:  # noqa: BLE001
            return Chem.Mol()
        for kekulize in (True, False):
            try:
                return rdMolDraw2D.PrepareMolForDrawing(m, kekulize=kekulize)
            except Exception:  # noqa: BLE001
                continue
    return Chem.Mol()


def _placeholder() -> "Chem.Mol":
    """One atom drawn as "?": the drawer leaves a cell without atoms blank, legend included."""
    mol = Chem.MolFromSmiles("*")
    mol.GetAtomWithIdx(0).SetProp("atomLabel", "?")
    return mol


def _short(text: str, n: int = 38) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def answer_grid(examples: list[dict[str, Any]], texts: list[str], certificates: list[Certificate],
                path: str | Path, source_title: str = "", max_rows: int = 12, cell: int = 300) -> Path:
    """Draw up to ``max_rows`` examples (module docstring) into ``path`` (.png or .svg)."""
    path = Path(path)
    cols = 3 if source_title else 2
    mols: list[Chem.Mol] = []
    legends: list[str] = []
    highlights: list[list[int]] = []
    for ex, text, cert in list(zip(examples, texts, certificates))[:max_rows]:
        where = find_answer(text)
        d = diagnose(text[where[0]:where[1]], 1000) if where else None
        flagged = sorted({a for p in (d.problems if d else []) for a in p.atoms})
        unexplained = [a for ix in (cert.info.get("unexplained") or {}).values() for a in ix]
        if source_title:
            source = diagnose(ex["source"]).raw
            mols.append(_drawable(source))
            legends.append(f"{source_title} ({ex.get('id')})")
            highlights.append(unexplained if source_title == "product" else [])
        mols.append(_drawable(diagnose(ex["target"]).raw))
        legends.append("reference" if source_title else f"reference ({ex.get('id')})")
        highlights.append([])
        unexplained_answer = unexplained if source_title == "reactants" else []
        if d is None or d.raw is None:  # nothing to draw: a "?" with the answer and RDKit's message as legend
            why = d.problems[0].message if d is not None and d.problems else "no SMILES"
            answer = d.smiles if d is not None else text.strip() or "(empty)"
            mols.append(_placeholder())
            legends.append("\n".join([cert.verdict, _short(answer), _short(why)]))
            highlights.append([])
        else:
            mols.append(_drawable(d.raw))
            sim = cert.info.get("morgan_sim")
            legends.append(_short(f"{cert.verdict}" + (f", Morgan {sim:.2f}" if isinstance(sim, float) else "")))
            unrelated = [a for a in cert.info.get("unrelated_atoms") or [] if isinstance(a, int)]
            highlights.append(sorted(set(flagged) | set(unexplained_answer) | set(unrelated)))
    rows = max(1, -(-len(mols) // cols))
    size = (cols * cell, rows * cell)
    drawer = (rdMolDraw2D.MolDraw2DSVG if path.suffix.lower() == ".svg" else rdMolDraw2D.MolDraw2DCairo)(
        *size, cell, cell)
    drawer.drawOptions().legendFontSize = 16
    drawer.drawOptions().drawMolsSameScale = False  # a small answer stays readable beside a large reference
    colours = [{a: RED for a in h} for h in highlights]
    with rdkit_log():
        drawer.DrawMolecules(mols, legends=legends, highlightAtoms=highlights, highlightAtomColors=colours,
                             highlightBonds=[[] for _ in mols])
    drawer.FinishDrawing()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = drawer.GetDrawingText()
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path
