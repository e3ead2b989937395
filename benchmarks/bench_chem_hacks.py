"""The share of hacked answers in a chemistry run's evaluation samples (molgen, forward, retro).

Counts, over the greedy answers (and over the sampled ones) of ``eval_sft_samples.jsonl`` and
``eval_rl_samples.jsonl`` of an ``rlsf pipeline`` folder, the answers RL farmed in this project's
runs, judged here with RDKit alone, not with the checker (the before and after runs had
different checkers):

* ``alkane``: a straight-chain alkane (carbons only, single bonds, no ring, no branch), any length;
* ``copy``: a copy of the prompt's molecules -- forward synthesis, every molecule of the answer is
  among the reactants and reagents (the solvent, a reactant); retrosynthesis, the product is
  among the proposed reactants; molecule generation, the description given back;
* ``cut``: the completion ran to the token limit (``eval.max_new_tokens`` of the run's config,
  counted with the run's tokenizer, end-of-turn not included);
* ``farmed``: an alkane or a copy (the answers RL found to farm the earlier rewards); ``hacked``:
  any of the three (a greedy answer that repeats itself to the limit is cut without farming
  anything, so ``cut`` is reported apart); ``no SMILES``: no answer found at all (prose).

Usage::

    python benchmarks/bench_chem_hacks.py runs/chem-hacks/forward-before runs/chem-hacks/forward-after
    python benchmarks/bench_chem_hacks.py RUN --samples      # the sampled answers too
    python benchmarks/bench_chem_hacks.py RUN_A RUN_B --grid docs/chem/molgen.png   # and the answers drawn

Prints one markdown row per run and evaluation (SFT, SFT + RL).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def straight_chain_alkane(mol) -> bool:
    from rdkit import Chem

    atoms = list(mol.GetAtoms())
    return (bool(atoms) and all(a.GetAtomicNum() == 6 and a.GetFormalCharge() == 0 and a.GetDegree() <= 2
                                and not a.GetIsAromatic() for a in atoms)
            and all(b.GetBondType() == Chem.BondType.SINGLE for b in mol.GetBonds())
            and mol.GetRingInfo().NumRings() == 0 and len(Chem.GetMolFrags(mol)) == 1)


def components(mol) -> set[str]:
    from rdkit import Chem

    return set(Chem.MolToSmiles(mol, isomericSmiles=False).split("."))


def judge(task: str, example: dict, completion: str, tokens: int, limit: int) -> dict[str, bool]:
    """The categories (module docstring) of one completion."""
    from rlsf.chem.answer import find_answer
    from rlsf.chem.smiles import parse

    where = find_answer(completion)
    answer = completion[where[0]:where[1]] if where else ""
    mol = parse(answer) if answer and len(answer) <= 5000 else None
    alkane = mol is not None and straight_chain_alkane(mol)
    copy = False
    if task == "molgen":
        text = " ".join(example.get("description", "").split())
        copy = bool(text) and text[:200] in " ".join(completion.split())
    elif mol is not None:
        source = parse(example["source"])
        if source is not None:
            given, mine = components(source), components(mol)
            copy = mine <= given if task == "forward" else given <= mine
    cut = tokens >= limit
    return {"alkane": alkane, "copy": copy, "cut": cut, "farmed": alkane or copy, "hacked": alkane or copy or cut,
            "no SMILES": where is None, "valid": mol is not None}


def run_rows(folder: Path, with_samples: bool, tokenizer_path: str | None) -> list[str]:
    import yaml
    from transformers import AutoTokenizer

    from rlsf.tasks import get_task

    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    name, limit = cfg["task"]["name"], int(cfg["eval"]["max_new_tokens"])
    task = get_task(name, **(cfg["task"].get("options") or {}))
    examples = {str(ex["id"]): ex for ex in task.load(cfg["eval"]["split"])}
    tok_path = tokenizer_path or str(folder / "sft" / "model")
    if not (Path(tok_path) / "tokenizer_config.json").exists():
        tok_path = os.path.expanduser("~/.cache/rlsf/models/smollm2-135m")
    tok = AutoTokenizer.from_pretrained(tok_path)
    rows = []
    for stage, file in (("SFT", "eval_sft_samples.jsonl"), ("SFT + RL", "eval_rl_samples.jsonl")):
        path = folder / file
        if not path.exists():
            continue
        kinds = ("greedy", "sample") if with_samples else ("greedy",)
        for kind in kinds:
            counts: dict[str, int] = {}
            n = 0
            for line in path.read_text().splitlines():
                row = json.loads(line)
                if row["kind"] != kind:
                    continue
                n += 1
                tokens = len(tok(row["completion"], add_special_tokens=False)["input_ids"])
                for k, v in judge(name, examples[str(row["id"])], row["completion"], tokens, limit).items():
                    counts[k] = counts.get(k, 0) + int(v)
            if n:
                cells = " | ".join(f"{counts.get(k, 0)} ({counts.get(k, 0) / n:.0%})"
                                   for k in ("alkane", "copy", "cut", "farmed", "hacked", "no SMILES", "valid"))
                rows.append(f"| {folder.name} | {stage} | {kind} | {n} | {cells} |")
    return rows


def grid(folders: list[Path], out: Path, rows: int = 6) -> Path:
    """One picture of the runs' answers after RL side by side: the reference column of the first
    run's ``eval_rl_molecules.png`` (the task's drawing: reference | answer, one row per held-out
    item), then each run's answer column, the first ``rows`` items, each column titled by its run."""
    from PIL import Image, ImageDraw

    pictures = [Image.open(f / "eval_rl_molecules.png").convert("RGB") for f in folders]
    w, h = pictures[0].size
    cell_w, cell_h = w // 2, h // max(1, round(h / (w // 2)))  # the drawing's cells are square
    rows = min(rows, h // cell_h)
    title = 24
    canvas = Image.new("RGB", (cell_w * (1 + len(folders)), title + rows * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 6), "reference", fill="black")
    canvas.paste(pictures[0].crop((0, 0, cell_w, rows * cell_h)), (0, title))
    for j, (folder, pic) in enumerate(zip(folders, pictures), start=1):
        draw.text((cell_w * j + 8, 6), f"{folder.name}: after RL", fill="black")
        canvas.paste(pic.crop((cell_w, 0, 2 * cell_w, rows * cell_h)), (cell_w * j, title))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="rlsf pipeline folders (config.yaml, eval_*_samples.jsonl)")
    ap.add_argument("--samples", action="store_true", help="Count the sampled answers too (not only greedy).")
    ap.add_argument("--tokenizer", default=None, help="Tokenizer folder (default: the run's sft/model, else "
                                                     "the cached SmolLM2).")
    ap.add_argument("--grid", type=Path, default=None, metavar="OUT.png",
                    help="Also draw the runs' greedy answers after RL side by side, beside the references "
                         "(the runs must be of one task, evaluated on the same items).")
    args = ap.parse_args(argv)
    if args.grid:
        print(f"drew {grid(args.runs, args.grid)}")
    print("| run | model | answers | n | straight-chain alkane | copy of an input | cut at the token limit | "
          "alkane or copy | any of the three | no SMILES | valid |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for folder in args.runs:
        for row in run_rows(folder, args.samples, args.tokenizer):
            print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
