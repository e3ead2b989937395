"""Chemistry with RDKit certificates: molecule generation, forward synthesis, retrosynthesis.

RLSF's three chemistry applications. The model answers with a SMILES string; RDKit checks it
(:mod:`rlsf.chem.smiles`) and the certificate points at **atoms**:

* the answer is the SMILES in the completion (:func:`find_answer`: after ``SMILES:`` /
  ``Answer:`` if present, else in backticks, else the longest whitespace-free run of SMILES
  characters; a completion that is only a SMILES is all answer);
* each problem RDKit reports (syntax error at a position, unclosed or duplicated ring label,
  valence, kekulisation, aromaticity) puts ``error_reward`` on the tokens of the atoms (or
  characters) it names, split evenly among them, with RDKit's own message; every other atom of a
  valid prefix shares ``clean_reward`` (each atom ``clean_reward / atoms``);
* reactions: every heavy atom of a product must be accounted for by the reactants, per element
  (:func:`rlsf.chem.smiles.unexplained_atoms`). Forward synthesis: the unexplained atoms of the
  answer get ``unexplained_reward``, split among them. Retrosynthesis: the unexplained atoms are
  in the prompt's product, so the whole answer gets it, and the message names them;
* the score of a valid answer is the weighted mean of canonical-SMILES exact match and Morgan and
  MACCS Tanimoto similarity to the reference (weights ``exact_weight``, ``morgan_weight``,
  ``maccs_weight``); an invalid or missing answer scores ``invalid_score``. Exact match compares
  canonical SMILES with the dot-separated components sorted (their order does not matter), with
  stereochemistry unless ``stereo: false``.

Verdicts: ``correct`` (exact match), ``wrong`` (valid, not the reference),
``unexplained_atoms`` (valid, but atoms come from nowhere), ``copies_input`` (reactions: the
answer repeats the prompt's molecules -- a reactant given back as the product, or the product
among the proposed reactants -- so no reaction happens; scored ``invalid_score``), ``syntax_error``,
``chemistry_error`` (parses, fails sanitisation), ``too_long``, ``no_smiles``, ``empty``.

Evaluation figures (:meth:`ChemTask.metrics`, per completion): ``success`` (exact match),
``validity`` (0/1), ``morgan_sim``, ``maccs_sim``, ``rdk_sim`` (Tanimoto, 0 when invalid).
:meth:`ChemTask.corpus_metrics` adds the figures of the literature over the greedy answers, under
their usual names: ``exact``, ``validity``, ``bleu`` (corpus BLEU over SMILES characters),
``levenshtein`` (mean), ``maccs_fts``, ``rdk_fts``, ``morgan_fts`` (means over the valid answers,
as MolT5 reports them). ``rlsf eval`` draws the greedy answers beside their references
(``molecules.png``, :mod:`rlsf.chem.draw`), with the atoms certificates flag in red.
"""

from __future__ import annotations

import csv
import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlsf.chem.answer import find_answer
from rlsf.feedback.certificate import Certificate, Span
from rlsf.settings import opt
from rlsf.tasks.base import Example, Messages, Task, TaskError, register

VERDICTS = ("correct", "wrong", "unexplained_atoms", "copies_input", "syntax_error", "chemistry_error", "too_long",
            "no_smiles", "empty")
_KEEP = 5000  # characters of the answer kept in the certificate (string metrics use them)


class ChemTask(Task):
    """Shared by the three chemistry tasks: checking one SMILES answer against one reference."""

    binary_metrics = ("success", "validity")
    splits: tuple[str, ...] = ("train", "test")

    @dataclass
    class Options(Task.Options):
        train_file: str = opt("", "File of the train split (default: the task's; a path or a name in the data folder).")
        test_file: str = opt("", "File of the test split, in the same format (default: the task's).")
        error_reward: float = opt(-1.0, "Span reward of one RDKit problem, split among the atoms it names.")
        clean_reward: float = opt(0.5, "Shared by the atoms of a valid prefix (each clean_reward / atoms).")
        unexplained_reward: float = opt(-1.0, "Span reward of atoms the reactants do not account for "
                                        "(reactions; split among them).")
        copy_reward: float = opt(-1.0, "Span reward of a reaction answer that repeats the prompt's molecules (a "
                                 "reactant as the product, the product among the reactants); it scores invalid_score.")
        invalid_score: float = opt(-0.5, "Score of an answer that is missing or not a valid molecule.")
        exact_weight: float = opt(0.5, "Weight of exact match in the score of a valid answer.")
        morgan_weight: float = opt(0.25, "Weight of Morgan (radius 2) Tanimoto similarity in the score.")
        maccs_weight: float = opt(0.25, "Weight of MACCS Tanimoto similarity in the score.")
        stereo: bool = opt(True, "Exact match compares stereochemistry (isomeric SMILES); false: ignores it.")
        max_chars: int = opt(1000, "Longer answers (and longer than twice the reference) are not parsed: the "
                             "characters past the limit are flagged (0: no limit).")
        validate: bool = opt(True, "Parse every reference SMILES when loading, reporting and skipping the "
                             "unparsable rows (about 1 s per 10,000 SMILES).")

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        weights = (o.exact_weight, o.morgan_weight, o.maccs_weight)
        if min(weights) < 0 or sum(weights) <= 0:
            raise TaskError(f"task {self.name!r}: exact/morgan/maccs weights must be >= 0 and not all 0, got {weights}")
        if o.max_chars < 0:
            raise TaskError(f"task {self.name!r}: max_chars must be >= 0 (0: no limit), got {o.max_chars}")
        self._data: dict[str, list[Example]] = {}

    # ---- data -----------------------------------------------------------------------------------
    #: split -> default file (relative to the data folder); subclasses set it.
    files: dict[str, str] = {}

    def _path(self, split: str) -> Path:
        given = {"train": self.options.train_file, "test": self.options.test_file}.get(split, "")
        if given:
            p = Path(given).expanduser()
            if p.exists():
                return p
            return self.data_file(given if "/" in given else f"{Path(self.files[split]).parent}/{given}")
        return self.data_file(self.files[split])

    def rows(self, split: str, path: Path) -> list[tuple[int, dict[str, str]]]:
        """``(line number, fields)`` of each row (subclasses say how to read their format)."""
        raise NotImplementedError

    def make_example(self, split: str, line: int, row: dict[str, str]) -> Example:
        raise NotImplementedError

    def load(self, split: str) -> list[Example]:
        self.check_split(split)
        if split not in self._data:
            path = self._path(split)
            bad: list[str] = []
            examples: list[Example] = []
            try:
                rows = self.rows(split, path)
            except (OSError, UnicodeDecodeError, csv.Error) as e:
                raise TaskError(f"task {self.name!r}: cannot read {path}: {e}") from None
            known = _validated(path) if self.options.validate else None
            unparsable: dict[int, str] = {}
            for line, row in rows:
                try:
                    ex = self.make_example(split, line, row)
                except (KeyError, ValueError) as e:
                    bad.append(f"{path.name} line {line}: {e}")
                    continue
                if self.options.validate:
                    problem = known.get(line) if known is not None else self._reference_problem(ex)
                    if problem:
                        unparsable[line] = problem
                        bad.append(f"{path.name} line {line}: {problem}")
                        continue
                examples.append(ex)
            if self.options.validate and known is None:
                _validated(path, unparsable)
            self._data[split] = self.keep_split(split, examples, bad, path.name)
        return [dict(ex) for ex in self._data[split]]

    def _reference_problem(self, ex: Example) -> str | None:
        from rlsf.chem.smiles import parse

        for key in ("target", "source"):
            if key in ex and parse(ex[key]) is None:
                return f"unparsable {key} SMILES {ex[key][:80]!r}"
        return None

    def demonstration(self, example: Example) -> str | None:
        return example["target"]

    # ---- checking -------------------------------------------------------------------------------
    def check(self, example: Example, completion: str) -> Certificate:
        from rlsf.chem.similarity import FINGERPRINTS, similarities
        from rlsf.chem.smiles import canonical, diagnose

        o = self.options
        where = find_answer(completion)
        if where is None:
            verdict = "empty" if not completion.strip() else "no_smiles"
            spans = [] if verdict == "empty" else [Span(0, len(completion), o.error_reward, "no SMILES in the answer")]
            return Certificate(o.invalid_score, verdict, spans=spans, info=_info(0.0))
        start, end = where
        limit = max(o.max_chars, 2 * len(example["target"])) if o.max_chars else 0  # never below the reference
        d = diagnose(completion[start:end], limit)
        spans = self._problem_spans(d, start)
        if not d.valid:
            kinds = {p.kind for p in d.problems}
            verdict = ("too_long" if "length" in kinds else
                       "syntax_error" if kinds & {"syntax", "ring", "charset", "mapping"} or d.raw is None
                       else "chemistry_error")
            info = _info(0.0, problems=len(d.problems), smiles=d.smiles[:_KEEP],
                         flagged_atoms=sorted({a for p in d.problems for a in p.atoms}))
            return Certificate(o.invalid_score, verdict, spans=spans, info=info)
        reference, reference_fps = _reference(example["target"], o.stereo)
        answer = canonical(d.mol, o.stereo)
        exact = answer == reference
        sims = similarities(d.mol, reference_fps) if reference_fps else {f"{k}_sim": 0.0 for k in FINGERPRINTS}
        unexplained, note = self._unexplained(example, d)
        if unexplained:
            spans.extend(self._unexplained_spans(d, unexplained, note, start, end))
        w = (o.exact_weight, o.morgan_weight, o.maccs_weight)
        score = (w[0] * exact + w[1] * sims["morgan_sim"] + w[2] * sims["maccs_sim"]) / sum(w)
        verdict = "correct" if exact else "unexplained_atoms" if unexplained else "wrong"
        copied = None if exact else self._copied(example, answer)
        if copied:  # no reaction at all: no credit for the atoms, the whole answer flagged
            spans = [sp for sp in spans if sp.reward < 0] + [Span(start, end, o.copy_reward, copied)]
            score, verdict = o.invalid_score, "copies_input"
        info = _info(1.0, exact=float(exact), smiles=d.smiles[:_KEEP], **sims,
                     unexplained={el: list(ix) for el, ix in unexplained.items()},
                     unexplained_atoms=sum(len(ix) for ix in unexplained.values()), copies_input=float(bool(copied)))
        return Certificate(score, verdict, correct=exact, spans=spans, info=info, answer=answer)

    def _copied(self, example: Example, answer: str) -> str:
        """Why ``answer`` (canonical SMILES) merely repeats the prompt's molecules ("": it does not)."""
        return ""

    def _problem_spans(self, d, offset: int) -> list[Span]:
        """``error_reward`` on each problem's characters; ``clean_reward`` shared by clean atoms of
        the valid prefix (before the first syntax problem, everywhere after a chemistry one)."""
        o = self.options
        spans: list[Span] = []
        flagged: set[tuple[int, int]] = set()
        for p in d.problems:
            for s, e in p.chars:
                spans.append(Span(offset + s, offset + e, o.error_reward / len(p.chars), p.message[:300]))
                flagged.add((s, e))
        stop = min((s for p in d.problems if p.kind in ("syntax", "charset", "length") for s, _ in p.chars),
                   default=len(d.smiles))
        atoms = [t for t in d.tokens if t.atom is not None]
        clean = [t for t in atoms if (t.start, t.end) not in flagged and t.end <= stop]
        if clean and o.clean_reward:
            share = o.clean_reward / len(atoms)
            spans.extend(Span(offset + t.start, offset + t.end, share, "") for t in clean)
        return spans

    # ---- reactions (overridden) -------------------------------------------------------------------
    def _unexplained(self, example: Example, d) -> tuple[dict[str, list[int]], str]:
        return {}, ""

    def _unexplained_spans(self, d, unexplained: dict[str, list[int]], note: str, start: int, end: int) -> list[Span]:
        return []

    # ---- evaluation -------------------------------------------------------------------------------
    def metrics(self, example: Example, certificate: Certificate) -> dict[str, float]:
        i = certificate.info
        return {"success": float(certificate.correct), "validity": float(i.get("valid", 0.0)),
                "morgan_sim": float(i.get("morgan_sim", 0.0)), "maccs_sim": float(i.get("maccs_sim", 0.0)),
                "rdk_sim": float(i.get("rdk_sim", 0.0))}

    def corpus_metrics(self, examples: list[Example], texts: list[str], certificates: list[Certificate]) -> dict[str, float]:
        """The literature's figures over one completion per example (module docstring)."""
        from rlsf.chem.similarity import char_bleu, levenshtein

        n = len(examples)
        if not n:
            return {}
        answers = [c.info.get("smiles", "") if isinstance(c.info.get("smiles"), str) else "" for c in certificates]
        refs = [ex["target"] for ex in examples]
        valid = [c for c in certificates if c.info.get("valid")]
        with warnings.catch_warnings():  # NLTK warns when a corpus has no 4-gram match at all
            warnings.simplefilter("ignore")
            bleu = char_bleu(refs, answers)
        out = {"exact": sum(c.correct for c in certificates) / n, "validity": len(valid) / n, "bleu": bleu,
               "levenshtein": sum(levenshtein(a, r) for a, r in zip(answers, refs)) / n}
        for fp in ("maccs", "rdk", "morgan"):
            out[f"{fp}_fts"] = sum(c.info[f"{fp}_sim"] for c in valid) / len(valid) if valid else 0.0
        return out

    def draw(self, examples: list[Example], texts: list[str], certificates: list[Certificate], path: Path) -> Path:
        """Answers beside their references, flagged atoms in red (:func:`rlsf.chem.draw.grid`)."""
        from rlsf.chem.draw import answer_grid

        return answer_grid(examples, texts, certificates, path, source_title=self.source_title)

    picture = "molecules.png"
    source_title = ""  # what the prompt's molecule is called in pictures ("" when the prompt is text)


def _validated(path: Path, found: dict[int, str] | None = None) -> dict[int, str] | None:
    """The unparsable rows of ``path`` found by an earlier load (``None``: not checked yet), or
    remember ``found``. Parsing 80,000 USPTO SMILES takes ~17 s; the file's size, time and the
    RDKit version key the record."""
    import hashlib
    import json

    import rdkit

    from rlsf.runtime.cache import cache_dir

    st = path.stat()
    # Not keyed by task: forward and retro read the same file and both check both columns.
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{rdkit.__version__}".encode()).hexdigest()
    record = cache_dir() / "chem" / f"{key[:20]}.json"
    if found is None:
        try:
            return {int(k): v for k, v in json.loads(record.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            return None
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps(found))
        tmp.replace(record)
    except OSError:
        pass  # a read-only cache only costs the parse next time
    return found


def _info(valid: float, **more: Any) -> dict[str, Any]:
    return {"valid": valid, **more}


@functools.lru_cache(maxsize=4096)
def _reference(smiles: str, stereo: bool) -> tuple[str | None, dict]:
    """Canonical SMILES and fingerprints of a reference, once per process: the k samples of a
    prompt, and every epoch over it, are checked against the same one."""
    from rlsf.chem.similarity import fingerprints
    from rlsf.chem.smiles import canonical, parse

    mol = parse(smiles)
    return (None, {}) if mol is None else (canonical(mol, stereo), fingerprints(mol))


@functools.lru_cache(maxsize=4096)
def _prompt_molecules(smiles: str, stereo: bool):
    """The prompt's molecules of a reaction, once per process: unsanitised (atom indices are SMILES
    token order) and as the set of canonical components (``None`` where RDKit cannot sanitise)."""
    from rdkit import Chem

    from rlsf.chem.smiles import canonical, parse, rdkit_log

    with rdkit_log():
        raw = Chem.MolFromSmiles(smiles, sanitize=False)
    mol = parse(smiles)
    return raw, (frozenset(canonical(mol, stereo).split(".")) if mol is not None else None)


# ---- the three tasks ----------------------------------------------------------------------------
def _read_csv(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or any(c not in header for c in columns):
            raise TaskError(f"{path}: expected a header with columns {', '.join(columns)}, got {header}")
        out = []
        for line, row in enumerate(reader, 2):
            if len(row) != len(header):
                out.append((line, {"_error": f"{len(row)} fields where the header has {len(header)}"}))
            else:
                out.append((line, dict(zip(header, row))))
        return out


def _field(row: dict[str, str], name: str) -> str:
    if "_error" in row:
        raise ValueError(row["_error"])
    value = row.get(name, "").strip()
    if not value:
        raise ValueError(f"empty {name}")
    return value


@register("molgen")
class MoleculeGeneration(ChemTask):
    """Text to molecule (ChEBI-20): the SMILES of the molecule a description describes."""

    description = "Write the SMILES of the molecule a text describes (ChEBI-20); RDKit checks it atom by atom."
    splits = ("train", "test", "design100")
    files = {"train": "chebi20/validation.txt", "test": "chebi20/test.txt",
             "design100": "chebi20/molecule_design_test_100.csv"}

    def rows(self, split: str, path: Path) -> list[tuple[int, dict[str, str]]]:
        if path.suffix == ".csv":
            return _read_csv(path, ("description", "SMILES"))
        out = []
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\n").split("\t")
            if header[:3] != ["CID", "SMILES", "description"]:
                raise TaskError(f"{path}: expected a TSV with header CID, SMILES, description; got {header}")
            for line, text in enumerate(f, 2):
                parts = text.rstrip("\n").split("\t")
                out.append((line, dict(zip(header, parts)) if len(parts) == 3 else
                            {"_error": f"{len(parts)} tab-separated fields, expected 3"}))
        return out

    def make_example(self, split: str, line: int, row: dict[str, str]) -> Example:
        # ChEBI-20's files escape backslashes (stereo bonds) as "\\".
        smiles = _field(row, "SMILES").replace("\\\\", "\\")
        ident = f"chebi:{row['CID']}" if row.get("CID") else f"{split}:{line - 1}"
        return {"id": ident, "description": _field(row, "description"), "target": smiles}

    def prompt(self, example: Example) -> Messages:
        return [{"role": "system", "content": "You are a chemist. Write the SMILES of the molecule the user "
                                              "describes. Answer with the SMILES only."},
                {"role": "user", "content": example["description"]}]


class _Reaction(ChemTask):
    """A reaction task: SMILES in (``source``), SMILES out (``target``)."""

    instruction = ""
    columns: dict[str, tuple[str, str]] = {}  # split -> (source column, target column)

    def rows(self, split: str, path: Path) -> list[tuple[int, dict[str, str]]]:
        return _read_csv(path, self.columns[split])

    def make_example(self, split: str, line: int, row: dict[str, str]) -> Example:
        src, tgt = self.columns[split]
        return {"id": f"{split}:{line - 1}", "source": _field(row, src), "target": _field(row, tgt)}

    def prompt(self, example: Example) -> Messages:
        return [{"role": "system", "content": self.instruction}, {"role": "user", "content": example["source"]}]

    answer_is_product = True  # forward synthesis; retrosynthesis answers with the reactants

    def _unexplained(self, example: Example, d) -> tuple[dict[str, list[int]], str]:
        """Product atoms the reactants lack (:func:`rlsf.chem.smiles.unexplained_atoms`); atom
        indices of the unsanitised parse (SMILES token order), of the answer or of the prompt."""
        from rlsf.chem.smiles import unexplained_atoms

        source, _ = _prompt_molecules(example["source"], self.options.stereo)
        if source is None:
            return {}, ""
        product, reactants = (d.raw, source) if self.answer_is_product else (source, d.raw)
        found = unexplained_atoms(product, reactants)
        shortfall = ", ".join(f"{len(ix)} {el}" for el, ix in sorted(found.items()))
        return found, f"the reactants cannot account for {shortfall} of the product" if found else ""

    def _copied(self, example: Example, answer: str) -> str:
        _, given = _prompt_molecules(example["source"], self.options.stereo)
        if given is None:
            return ""
        mine = set(answer.split("."))
        if self.answer_is_product and mine <= given:
            return "the answer is one of the reactants, unchanged: no reaction"
        if not self.answer_is_product and given <= mine:
            return "the answer contains the product itself: no reaction"
        return ""


@register("forward")
class ForwardSynthesis(_Reaction):
    """Reactants (and reagents) to product: USPTO-50k reversed to train, USPTO-MIT to test."""

    description = "Predict the product of a reaction from its reactants (USPTO); RDKit checks it atom by atom."
    files = {"train": "uspto/uspto50k_retro_train.csv", "test": "uspto/uspto_mit_forward_test.csv"}
    columns = {"train": ("reactants_smiles", "products_smiles"), "test": ("reactant", "product")}
    instruction = ("You are a chemist. The user gives the reactants and reagents of a reaction as SMILES separated "
                   "by '.'. Predict the main product. Answer with its SMILES only.")
    source_title = "reactants"
    answer_is_product = True

    def _unexplained_spans(self, d, unexplained, note, start, end) -> list[Span]:
        atoms = [a for ix in unexplained.values() for a in ix]
        chars = [d.atom_chars(a) for a in atoms]
        r = self.options.unexplained_reward / len(atoms)
        return [Span(start + c[0], start + c[1], r, note) for c in chars if c is not None]


@register("retro")
class Retrosynthesis(_Reaction):
    """Product to reactants (USPTO-50k; the 100-item test set of ChemLLMBench)."""

    description = "Propose the reactants of a product (USPTO-50k); RDKit checks them atom by atom."
    files = {"train": "uspto/uspto50k_retro_train.csv", "test": "uspto/uspto50k_retro_test.csv"}
    columns = {"train": ("products_smiles", "reactants_smiles"), "test": ("products_smiles", "reactants_smiles")}
    instruction = ("You are a chemist. The user gives the SMILES of a product. Propose the reactants that make it "
                   "in one step. Answer with their SMILES only, separated by '.'.")
    source_title = "product"
    answer_is_product = False

    def _unexplained_spans(self, d, unexplained, note, start, end) -> list[Span]:
        return [Span(start, end, self.options.unexplained_reward, note)]
