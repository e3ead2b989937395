"""Chemistry with RDKit certificates: molecule generation, forward synthesis, retrosynthesis.

RLSF's three chemistry applications. The model answers with a SMILES string; RDKit checks it
(:mod:`rlsf.chem.smiles`) and the certificate points at **atoms**.

**No attempt** (:meth:`~rlsf.feedback.certificate.Certificate.no_attempt`, the least reward under
every shaping): an empty or blank reply (``empty``); prose, a refusal or a question, i.e. no SMILES
(``no_smiles``; English words are not SMILES even where their letters are atoms: ``I`` in "I don't
know." is the pronoun, not iodine; nor are "N/A" or an answer without a letter,
:func:`rlsf.chem.answer.is_non_answer`); the prompt given back
(``restates_prompt``); an input molecule given back (``copies_input``: forward synthesis, an answer
whose molecules are all among the reactants and reagents -- the solvent, a reactant; retrosynthesis,
reactants that include the product itself). Copies compare canonical SMILES with and without
stereochemistry.

**Attempts.** The answer is the SMILES in the completion (:func:`find_answer`: after ``SMILES:`` /
``Answer:`` if present, else in backticks, else the longest whitespace-free run of SMILES
characters that is not a word; a completion that is only a SMILES is all answer). Its atoms are
matched one to one to the reference's by neighbourhood (element, aromaticity, charge and the bonds
to heavy neighbours; :mod:`rlsf.chem.match`), on the molecule RDKit reads (sanitised when valid,
unsanitised for a valence or kekulisation problem, the part before a syntax error otherwise).

* each problem RDKit reports (syntax error at a position, unclosed or duplicated ring label,
  valence, kekulisation, aromaticity, too long) puts ``error_reward`` on the tokens of the atoms
  (or characters) it names, split evenly among them, with RDKit's own message;
* every *matched* atom that no problem names earns ``clean_reward / max(answer atoms, reference
  atoms)``: credit for the right parts, none for atoms the reference does not have, and none for a
  chain longer than the reference's;
* an answer **unrelated** to the reference -- more than ``max(related_min, related_share x
  reference atoms)`` (5, 15 %) atoms unmatched on either side, more than one or two slips explain
  (an alkane to the token limit, a small molecule for a large one) -- gets ``unrelated_reward``
  times the number of reference sizes its unmatched atoms make (at least 1, at most
  ``unrelated_cap``: an answer cut at the token limit, ten times the reference's length, pays
  4x), split over its unmatched atoms (over its last atom when it is too short); verdict
  ``unrelated`` when valid;
* reactions: every heavy atom of a product must be accounted for by the reactants, per element
  (:func:`rlsf.chem.smiles.unexplained_atoms`). Forward synthesis: the unexplained atoms of the
  answer get ``unexplained_reward``, split among them. Retrosynthesis: the unexplained atoms are
  in the prompt's product, so the whole answer gets it, and the message names them.

**The score**: 1 for the reference (exact match of canonical SMILES, dot-separated components
sorted, stereochemistry included unless ``stereo: false``); otherwise ``base_score +
valid_reward x valid + similarity_reward x similarity``, where ``valid`` counts only for an
answer related to the reference (no validity bonus for an unrelated molecule) and ``similarity``
is the Tanimoto similarity of the answer's and the reference's atom multisets, with and without
their neighbourhoods (the mean of both, :attr:`rlsf.chem.match.Match.similarity`; 0 when nothing
is readable). Similarity weighs far more than validity (0.8 against 0.1 by default), so an
invalid answer one atom away from the reference scores above any valid molecule unrelated to it,
and an alkane twice the reference's length matches at most half of it.

Verdicts: ``correct`` (exact match), ``wrong`` (valid, close to the reference), ``unrelated``
(valid, far from it), ``unexplained_atoms`` (valid, but atoms come from nowhere), ``syntax_error``,
``chemistry_error`` (parses, fails sanitisation), ``too_long``, and the no-attempt verdicts
``copies_input``, ``restates_prompt``, ``no_smiles``, ``empty``.

Evaluation figures (:meth:`ChemTask.metrics`, per completion): ``success`` (exact match),
``validity`` (0/1), ``morgan_sim``, ``maccs_sim``, ``rdk_sim`` (Tanimoto, 0 when invalid).
:meth:`ChemTask.corpus_metrics` adds the figures of the literature over the greedy answers, under
their usual names: ``exact``, ``validity``, ``bleu`` (corpus BLEU over SMILES characters),
``levenshtein`` (mean), ``maccs_fts``, ``rdk_fts``, ``morgan_fts`` (means over the valid answers,
as MolT5 reports them). ``rlsf eval`` draws the greedy answers beside their references
(``molecules.png``, :mod:`rlsf.chem.draw`), with the atoms certificates flag in red.

Reward ordering (:func:`rlsf.tasks.harness.reward_ordering`): :meth:`ChemTask.near_misses` are
one-slip variants of the reference (:mod:`rlsf.chem.edits`), :meth:`ChemTask.reward_hacks` the
answers RL found in this project's runs (an alkane, to the token limit; a small unrelated molecule;
the solvent or a reactant given back; the product given back).
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlsf.chem.answer import find_answer, is_non_answer
from rlsf.chem.references import alone, cached_validation, prompt_molecules, reference_info
from rlsf.feedback.certificate import Certificate, Span
from rlsf.runtime.extras import needs
from rlsf.settings import opt
from rlsf.tasks.base import Example, Messages, Task, TaskError, register
from rlsf.tasks.sources import Rows, dataset_rows

VERDICTS = ("correct", "wrong", "unrelated", "unexplained_atoms", "syntax_error", "chemistry_error", "too_long",
            "copies_input", "restates_prompt", "no_smiles", "empty")
NO_ATTEMPT = ("copies_input", "restates_prompt", "no_smiles", "empty")
_KEEP = 5000  # characters of the answer kept in the certificate (string metrics use them)


@needs("rdkit", "rapidfuzz", "nltk")  # rlsf[chem]: building the task without them fails in one line
class ChemTask(Task):
    """Shared by the three chemistry tasks: checking one SMILES answer against one reference."""

    binary_metrics = ("success", "validity")
    splits: tuple[str, ...] = ("train", "test")

    @dataclass
    class Options(Task.Options):
        train_file: str = opt("", "File of the train split (default: the task's; a path or a name in the data folder).")
        test_file: str = opt("", "File of the test split, in the same format (default: the task's).")
        error_reward: float = opt(-1.0, "Span reward of one RDKit problem, split among the atoms it names.")
        clean_reward: float = opt(0.5, "Shared by the atoms that match the reference's (each clean_reward / max(answer "
                                  "atoms, reference atoms)); atoms the reference lacks earn nothing.")
        unrelated_reward: float = opt(-1.0, "Span reward of an answer unrelated to the reference (more unmatched atoms "
                                      "than related_min / related_share allow), per reference size of unmatched "
                                      "atoms (at least 1, at most unrelated_cap), split among them.")
        unrelated_cap: float = opt(4.0, "At most this many unrelated_reward for one answer (an answer to the token "
                                   "limit, many times the reference's length).")
        related_min: int = opt(5, "An answer is related to the reference while at most max(related_min, related_share "
                               "x reference atoms) atoms are unmatched on either side (one slip changes up to 5).")
        related_share: float = opt(0.15, "See related_min.")
        unexplained_reward: float = opt(-1.0, "Span reward of atoms the reactants do not account for "
                                        "(reactions; split among them).")
        base_score: float = opt(-0.5, "Score of a wrong attempt with nothing of the reference in it.")
        valid_reward: float = opt(0.1, "Added to the score of a valid (sanitisable) wrong answer related to the "
                                  "reference (an unrelated molecule earns nothing for its validity).")
        similarity_reward: float = opt(0.8, "Added to the score of a wrong answer times its similarity to the "
                                       "reference (matched atoms' Tanimoto, 0..1).")
        stereo: bool = opt(True, "Exact match compares stereochemistry (isomeric SMILES); false: ignores it.")
        max_chars: int = opt(1000, "Longer answers (and longer than twice the reference) are not parsed: the "
                             "characters past the limit are flagged (0: no limit).")
        validate: bool = opt(True, "Parse every reference SMILES when loading, reporting and skipping the "
                             "unparsable rows (about 1 s per 10,000 SMILES).")

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        if not (o.base_score + o.valid_reward + o.similarity_reward < 1 and o.similarity_reward > o.valid_reward >= 0
                and o.base_score > -1):
            raise TaskError(f"task {self.name!r}: need -1 < base_score, 0 <= valid_reward < similarity_reward and "
                            f"base_score + valid_reward + similarity_reward < 1 (a wrong answer below a right one), "
                            f"got {o.base_score}, {o.valid_reward}, {o.similarity_reward}")
        if o.related_min < 0 or o.related_share < 0 or o.unrelated_cap < 1:
            raise TaskError(f"task {self.name!r}: related_min and related_share must be >= 0, unrelated_cap >= 1")
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
            got = dataset_rows(self, split, start=2)  # numbered as the files' lines (a header first)
            path = None if got is not None else self._path(split)
            bad: list[str] = []
            examples: list[Example] = []
            try:
                rows = got or Rows(path.name, self.rows(split, path))
            except (OSError, UnicodeDecodeError, csv.Error) as e:
                raise TaskError(f"task {self.name!r}: cannot read {path}: {e}") from None
            known = cached_validation(path) if self.options.validate and path else None  # a dataset's: not cached
            unparsable: dict[int, str] = {}
            for line, row in rows.items:
                try:
                    ex = self.make_example(split, line, row)
                except (KeyError, ValueError) as e:
                    bad.append(f"{rows.where(line)}: {e}")
                    continue
                if self.options.validate:
                    problem = known.get(line) if known is not None else self._reference_problem(ex)
                    if problem:
                        unparsable[line] = problem
                        bad.append(f"{rows.where(line)}: {problem}")
                        continue
                examples.append(ex)
            if self.options.validate and known is None and path:
                cached_validation(path, unparsable)
            self._data[split] = self.keep_split(split, examples, bad, rows.source)
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
        from rlsf.chem.match import match
        from rlsf.chem.similarity import FINGERPRINTS, similarities
        from rlsf.chem.smiles import canonical, diagnose, salvage

        o = self.options
        if not completion.strip():
            return Certificate.no_attempt("empty", "no answer", completion, **_info(0.0))
        where = find_answer(completion)
        restated = self._restates_prompt(example, completion, where)
        if restated:
            return Certificate.no_attempt("restates_prompt", restated, completion, **_info(0.0))
        if where is None:
            return Certificate.no_attempt("no_smiles", "no SMILES in the answer: prose is no answer", completion,
                                          **_info(0.0))
        start, end = where
        if is_non_answer(completion[start:end], alone=alone(completion, start, end)):
            return Certificate.no_attempt("no_smiles", f"{completion[start:end][:40]!r} names no molecule (a word, "
                                          "not a SMILES): no answer", completion, **_info(0.0))
        ref = reference_info(example["target"], o.stereo)
        limit = max(o.max_chars, 2 * len(example["target"])) if o.max_chars else 0  # never below the reference
        d = diagnose(completion[start:end], limit)
        info = _info(float(d.valid), smiles=d.smiles[:_KEEP])
        exact, answer, sims = False, None, {f"{k}_sim": 0.0 for k in FINGERPRINTS}
        if d.valid:
            answer = canonical(d.mol, o.stereo)
            exact = answer == ref.canonical
            sims = similarities(d.mol, ref.fingerprints) if ref.fingerprints else sims
            copied = "" if exact else self._copied(example, d.mol)
            if copied:  # no reaction at all: no answer
                return Certificate.no_attempt("copies_input", copied, completion, **info, **sims, copies_input=1.0)
        spans = self._problem_spans(d, start)
        mol = d.mol if d.valid else salvage(d)
        atom_tokens = [t for t in d.tokens if t.atom is not None]
        found = None
        if mol is not None and ref.atoms:
            found = match(mol, ref.neighbourhoods, ref.atoms, extra_atoms=len(atom_tokens) - mol.GetNumAtoms())
            spans.extend(self._match_spans(d, found, start))
        unrelated = found is not None and not exact and not self._related(found)
        if unrelated:
            spans.extend(self._unrelated_spans(d, found, start))
        unexplained, note = self._unexplained(example, d) if d.valid else ({}, "")
        if unexplained:
            spans.extend(self._unexplained_spans(d, unexplained, note, start, end))
        similarity = found.similarity if found is not None else 0.0
        if exact:
            score, verdict = 1.0, "correct"
        else:
            score = o.base_score + o.valid_reward * (d.valid and not unrelated) + o.similarity_reward * similarity
            if not d.valid:
                kinds = {p.kind for p in d.problems}
                verdict = ("too_long" if "length" in kinds else
                           "syntax_error" if kinds & {"syntax", "ring", "charset", "mapping"} or d.raw is None
                           else "chemistry_error")
            else:
                verdict = "unexplained_atoms" if unexplained else "unrelated" if unrelated else "wrong"
        info.update(exact=float(exact), **sims, similarity=similarity, unrelated=float(unrelated),
                    matched_atoms=len(found.matched) if found else 0, answer_atoms=len(atom_tokens),
                    reference_atoms=ref.atoms, unrelated_atoms=list(found.unmatched) if unrelated else [],
                    unexplained={el: list(ix) for el, ix in unexplained.items()},
                    unexplained_atoms=sum(len(ix) for ix in unexplained.values()), copies_input=0.0)
        if not d.valid:
            info.update(problems=len(d.problems), flagged_atoms=sorted({a for p in d.problems for a in p.atoms}))
        return Certificate(score, verdict, correct=exact, spans=spans, info=info, answer=answer)

    def feedback(self, example: Example, completion: str, certificate: Certificate) -> str:
        """RDKit's objections, or how a valid answer is wrong; never the reference (:mod:`rlsf.chem.feedback`)."""
        from rlsf.chem.feedback import feedback_turn
        return feedback_turn(self.name, completion, certificate) or super().feedback(example, completion, certificate)

    def _related(self, found) -> bool:
        o = self.options
        slack = max(o.related_min, o.related_share * found.reference_atoms)
        return found.answer_atoms - len(found.matched) <= slack and found.missing <= slack

    # ---- reward ordering (rlsf.tasks.harness.reward_ordering) -------------------------------------
    def near_misses(self, example: Example) -> dict[str, str]:
        """One-slip variants of the reference (:mod:`rlsf.chem.edits`), one of them invalid (a carbon with
        five bonds)."""
        return self._near_misses(example, ("atom changed", "bond changed", "atom removed"))

    def _near_misses(self, example: Example, kinds: tuple[str, ...]) -> dict[str, str]:
        from rlsf.chem.edits import invalid_variant, one_slip_variants

        def honest(mol) -> bool:  # keeps to the atoms at hand and is no copy of the prompt
            return self._explained(example, mol) and not self._copied(example, mol)

        out = one_slip_variants(example["target"], kinds, keep=honest)
        invalid = invalid_variant(example["target"])
        if invalid is not None:
            out["valence error"] = invalid
        return out

    def _explained(self, example: Example, mol) -> bool:
        return True

    def reward_hacks(self, example: Example) -> dict[str, str]:
        """What RL found in this project's runs: straight-chain alkanes (long, to the token limit, cut
        there), and small molecules unrelated to a reference of 10 atoms or more."""
        from rlsf.chem.smiles import canonical, parse

        ref = reference_info(example["target"], self.options.stereo)
        hacks = {"alkane": "C" * 40, "alkane to the token limit": "C" * 400,
                 "alkane cut at the token limit": "C" * 399 + "("}
        if ref.atoms >= 10:
            hacks.update({"ethanol": "CCO", "methane": "C"})
        return {k: v for k, v in hacks.items()
                if (m := parse(v)) is None or canonical(m, self.options.stereo) != ref.canonical}

    def _copied(self, example: Example, mol) -> str:
        """Why the answer (a valid molecule) merely gives back the prompt's molecules ("": it does not)."""
        return ""

    def prompt_text(self, example: Example) -> str:
        """The text of the prompt a reply may give back (the user message; "" for an example without one)."""
        from rlsf.tasks.base import user_text

        try:
            return user_text(self.prompt(example))
        except KeyError:
            return ""

    def _restates_prompt(self, example: Example, completion: str, where: tuple[int, int] | None) -> str:
        """Why ``completion`` gives the prompt back instead of answering ("": it does not): it is a
        piece of the prompt (three words or more), or its answer lies inside a copy of the prompt."""
        given = " ".join(self.prompt_text(example).split())
        mine = " ".join(completion.split())
        if not given or not mine:
            return ""
        if len(mine.split()) >= 3 and mine in given:
            return "a piece of the prompt given back: no answer"
        at = completion.find(given) if len(given) >= 8 else -1
        if at >= 0 and (where is None or (at <= where[0] and where[1] <= at + len(given))):
            return "the prompt given back: no answer"
        return ""

    def _problem_spans(self, d, offset: int) -> list[Span]:
        """``error_reward`` on each problem's characters."""
        o = self.options
        return [Span(offset + s, offset + e, o.error_reward / len(p.chars), p.message[:300])
                for p in d.problems for s, e in p.chars]

    def _match_spans(self, d, found, offset: int) -> list[Span]:
        """``clean_reward`` shared by the matched atoms no problem names, each ``clean_reward / max(answer
        atoms, reference atoms)``."""
        o = self.options
        if not o.clean_reward:
            return []
        named = {a for p in d.problems for a in p.atoms}
        share = o.clean_reward / max(found.answer_atoms, found.reference_atoms, 1)
        spans = []
        for a in found.matched:
            where = d.atom_chars(a)
            if a not in named and where is not None:
                spans.append(Span(offset + where[0], offset + where[1], share, ""))
        return spans

    def _unrelated_spans(self, d, found, offset: int) -> list[Span]:
        """``unrelated_reward`` over the unmatched atoms of an answer unrelated to the reference, or over
        its last atom when every atom it has matches (it is too short)."""
        from rlsf.chem.match import describe

        o = self.options
        why = (f"unrelated to the reference: {len(found.matched)} of the answer's {found.answer_atoms} heavy atoms "
               f"match the reference's {found.reference_atoms}")
        chars = [(a, d.atom_chars(a)) for a in found.unmatched]
        chars = [(a, c) for a, c in chars if c is not None]
        if chars:
            excess = found.answer_atoms - len(found.matched)
            times = min(o.unrelated_cap, max(1.0, excess / max(found.reference_atoms, 1)))
            r = o.unrelated_reward * times / len(chars)
            return [Span(offset + c[0], offset + c[1], r, f"{why}; the reference has no more {describe(found.keys[a])}")
                    for a, c in chars]
        last = max((t for t in d.tokens if t.atom is not None and t.atom < len(found.keys)), key=lambda t: t.end,
                   default=None)
        if last is None:
            return []
        return [Span(offset + last.start, offset + last.end, o.unrelated_reward,
                     f"{why}: too short, {found.missing} of the reference's atoms missing")]

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

    def corpus_metrics(self, examples: list[Example], texts: list[str],
                       certificates: list[Certificate]) -> dict[str, float]:
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


def _info(valid: float, **more: Any) -> dict[str, Any]:
    return {"valid": valid, **more}


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

        source, _ = prompt_molecules(example["source"], self.options.stereo)
        if source is None:
            return {}, ""
        product, reactants = (d.raw, source) if self.answer_is_product else (source, d.raw)
        found = unexplained_atoms(product, reactants)
        shortfall = ", ".join(f"{len(ix)} {el}" for el, ix in sorted(found.items()))
        return found, f"the reactants cannot account for {shortfall} of the product" if found else ""

    def _copied(self, example: Example, mol) -> str:
        from rlsf.chem.smiles import canonical

        _, given = prompt_molecules(example["source"], self.options.stereo)
        if given is None:
            return ""
        for prompt, stereo in zip(given, (self.options.stereo, False)):
            mine = set(canonical(mol, stereo).split("."))
            if self.answer_is_product and mine <= prompt:
                return "the answer is among the reactants and reagents, unchanged: no reaction, no answer"
            if not self.answer_is_product and prompt <= mine:
                return "the answer contains the product itself: no reaction, no answer"
        return ""

    def near_misses(self, example: Example) -> dict[str, str]:
        return self._near_misses(example, ("atom changed", "bond changed", "atom added") if not self.answer_is_product
                                 else ("atom changed", "bond changed", "atom removed"))

    def reward_hacks(self, example: Example) -> dict[str, str]:
        hacks = super().reward_hacks(example)
        parts = example["source"].split(".")
        if self.answer_is_product:
            hacks["a reactant copied"] = max(parts, key=len)
            hacks["the solvent copied"] = min(parts, key=len)
            hacks["all inputs copied"] = example["source"]
        else:
            hacks["the product copied"] = example["source"]
            hacks["the product and water"] = example["source"] + ".O"
        return hacks

    def _explained(self, example: Example, mol) -> bool:
        """No atom of the product comes from nowhere (a near miss keeps to the atoms at hand)."""
        from rlsf.chem.smiles import unexplained_atoms

        source, _ = prompt_molecules(example["source"], self.options.stereo)
        if source is None:
            return True
        product, reactants = (mol, source) if self.answer_is_product else (source, mol)
        return not unexplained_atoms(product, reactants)


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
