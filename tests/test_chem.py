"""Chemistry tasks: RDKit certificates that point at atoms, reactions, metrics, data, pictures.

Real RDKit throughout, on valid, invalid and adversarial SMILES.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from rdkit import Chem

from rlsf.chem.edits import invalid_variant, one_slip_variants
from rlsf.chem.match import match, reference_neighbourhoods
from rlsf.chem.similarity import char_bleu, levenshtein, tanimoto
from rlsf.chem.smiles import canonical, diagnose, rdkit_log, salvage, tokenize, unexplained_atoms
from rlsf.tasks import get_task
from rlsf.tasks.base import TaskError
from rlsf.tasks.chem import NO_ATTEMPT, VERDICTS, find_answer
from rlsf.tasks.harness import reward_ordering
from rlsf.tasks.harness.ordering import SHAPINGS, total_reward

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
MOL = {"id": "x", "description": "aspirin", "target": ASPIRIN}


def molgen(**options):
    return get_task("molgen", **options)


def negatives(cert, text):
    return [(text[s.start:s.end], round(s.reward, 3)) for s in cert.spans if s.reward < 0]


# ---- tokens and atom numbering ------------------------------------------------------------------
@pytest.mark.parametrize("smiles", [
    ASPIRIN, "Cl[C@@H](F)Br", "[13CH4]", "[NH4+].[Cl-]", "C1CC%12CC1CC%12", "[2H]C([2H])([2H])O", "c1ccn[nH]1",
    "O=[N+]([O-])c1ccccc1", "F/C=C/F", "[Na+].[O-]C(=O)C", "BrCCCl", "*CC*", "[Fe+2]", "C#N", "[H][H]",
])
def test_atom_tokens_are_rdkit_atoms_in_order(smiles: str) -> None:
    tokens, bad = tokenize(smiles)
    assert bad is None
    atoms = [t for t in tokens if t.atom is not None]
    mol = Chem.MolFromSmiles(smiles, sanitize=False)
    assert [t.atom for t in atoms] == list(range(mol.GetNumAtoms()))
    for t in atoms:
        symbol = mol.GetAtomWithIdx(t.atom).GetSymbol()
        assert symbol.lower() in t.text.lower(), (t, symbol)
    assert "".join(t.text for t in tokens) == smiles


# ---- diagnosis: one adversarial SMILES each ------------------------------------------------------
def flagged(smiles: str) -> list[str]:
    d = diagnose(smiles)
    return [smiles[s:e] for p in d.problems for s, e in p.chars]


@pytest.mark.parametrize("smiles, kind, text, words", [
    ("CC(C", "syntax", ["("], "extra open parentheses"),
    ("CC)C", "syntax", [")"], "extra close parentheses"),
    ("CC((C))", "syntax", ["("], "syntax error"),
    ("C[Xx]C", "syntax", ["[Xx]"], "syntax error"),
    ("[13CH4", "syntax", ["4"], "syntax error"),
    ("C1CC", "ring", ["C", "1"], "unclosed ring"),
    ("C1CC1C1", "ring", ["C", "1"], "unclosed ring"),
    ("C11", "ring", ["1", "1"], "duplicated ring closure"),
    ("C(C)(C)(C)(C)C", "valence", ["C"], "Explicit valence for atom # 0 C, 5"),
    ("CC[N+](C)(C)(C)C", "valence", ["[N+]"], "atom # 2 N"),
    ("FC(F)(F)(F)F", "valence", ["C"], "atom # 1 C"),
    ("c1cccc1", "kekulize", ["c"] * 5, "Can't kekulize"),
    ("Cc1ccnc1", "kekulize", ["c", "c", "c", "n", "c"], "Can't kekulize"),
    ("cC", "aromaticity", ["c"], "non-ring atom 0 marked aromatic"),
    ("CñC", "charset", ["ñ"], "not part of a SMILES"),
    ("CC\u200bO", "charset", ["\u200b"], "not part of a SMILES"),
])
def test_problems_name_the_offending_characters(smiles: str, kind: str, text: list[str], words: str) -> None:
    d = diagnose(smiles)
    assert not d.valid and d.problems
    assert d.problems[0].kind == kind
    assert words in d.problems[0].message, d.problems[0].message
    assert flagged(smiles) == text


def test_kekulize_points_at_the_ring_not_the_methyl() -> None:
    d = diagnose("Cc1ccnc1")
    assert d.problems[0].atoms == (1, 2, 3, 4, 5)  # atom 0 (the methyl) is fine


@pytest.mark.parametrize("smiles", [
    ASPIRIN, "[13CH4]", "Cl[C@@H](F)Br", "C[N+](C)(C)C", "[NH4+].[Cl-]", "F/C=C/F", "[O-][N+](=O)c1ccccc1",
    "C1CC%12CC1CC%12", "[2H]OC", "c1ccc2ccccc2c1", "O=C=O", "[Na+].[Cl-]", "C=1CC1",
])
def test_valid_smiles_have_no_problem(smiles: str) -> None:
    d = diagnose(smiles)
    assert d.valid and d.problems == [] and d.mol is not None


def test_huge_input_is_cut_quickly() -> None:
    smiles = "C" * 100_000
    t0 = time.perf_counter()
    d = diagnose(smiles, max_chars=1000)
    assert time.perf_counter() - t0 < 2.0
    assert d.problems[0].kind == "length" and d.problems[0].chars == ((1000, 100_000),)
    cert = molgen().check(MOL, smiles)
    assert cert.verdict == "too_long" and cert.score == -0.5 and cert.attempted


def test_diagnosis_works_where_rdkit_log_was_disabled() -> None:
    # Found by CI: a test that called RDLogger.DisableLog("rdApp.*") emptied every later message.
    from rdkit import RDLogger, rdBase

    RDLogger.DisableLog("rdApp.*")
    try:
        assert "extra open parentheses" in diagnose("CC(C").problems[0].message
        assert "rdApp.error:disabled" in rdBase.LogStatus()  # the caller's choice is restored
    finally:
        RDLogger.EnableLog("rdApp.error")
        RDLogger.EnableLog("rdApp.warning")


def test_rdkit_log_is_captured_not_printed(capfd) -> None:
    task = molgen()
    for text in ("CC(C", "c1cccc1", "C(C)(C)(C)(C)C", "C1CC", "[Xx]"):
        task.check(MOL, text)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    with rdkit_log() as messages:
        Chem.MolFromSmiles("CC(C")
    assert any("extra open parentheses" in m for m in messages)
    assert not any(m.startswith("[") and "]" in m[:10] for m in messages)  # timestamps removed


# ---- finding the answer in a completion ---------------------------------------------------------
@pytest.mark.parametrize("text, answer", [
    ("CCO", "CCO"),
    ("  CCO\n", "CCO"),
    ("The answer is CCO.", "CCO"),
    ("SMILES: CC(=O)O", "CC(=O)O"),
    ("Answer: `c1ccccc1`", "c1ccccc1"),
    ("I think it is (CCO), ethanol", "CCO"),
    ("The molecule is `CC(=O)Oc1ccccc1C(=O)O`, which is aspirin.", ASPIRIN),
    ("Sure! Here is my answer:\nSMILES: CCN\nThis is ethylamine.", "CCN"),
    ("CC(C", "CC(C"),
    ("hello", "hello"),  # a lone piece is the answer even when it is not SMILES (and is then flagged)
])
def test_find_answer(text: str, answer: str) -> None:
    where = find_answer(text)
    assert where is not None and text[where[0]:where[1]] == answer


@pytest.mark.parametrize("text", ["", "   \n\t", "\u3000"])
def test_empty_answers(text: str) -> None:
    cert = molgen().check(MOL, text)
    assert cert.verdict == "empty" and not cert.correct and not cert.attempted and cert.score == -1.0
    assert cert.spans == []


def test_prose_without_smiles_is_no_attempt() -> None:
    text = "This is a hard question, I'd rather not guess."
    cert = molgen().check(MOL, text)
    assert cert.verdict == "no_smiles" and not cert.attempted and cert.score == -1.0
    assert negatives(cert, text) == [] and "prose is no answer" in cert.spans[0].message


@pytest.mark.parametrize("text", [
    "I don't know.", "I'm sorry, but I can't help with that request.", "Could you clarify what you mean?",
    "Let me think about this step by step. This is an interesting problem, and the answer is clear.",
    "SMILES: I don't know", "Answer: unknown", "None", "none", "No.", "N/A", "?", "...", "hello", "ethanol",
    "Sorry, no idea", "SMILES: aspirin",
])
def test_prose_refusals_and_words_are_no_attempt(text: str) -> None:
    # Found by the issue: "I don't know." earned +0.50, the I read as iodine (valid, one clean atom).
    for name in ("molgen", "forward", "retro"):
        ex = MOL if name == "molgen" else {"id": "r", "source": "CCOC(C)=O", "target": "CCO.CC(=O)Cl"}
        cert = get_task(name).check(ex, text)
        assert not cert.attempted and cert.verdict == "no_smiles" and cert.score == -1.0, (name, text, cert.verdict)


def test_i_dont_know_is_not_iodine() -> None:
    assert find_answer("I don't know.") is None  # the pronoun is a word, not an atom
    assert find_answer("I think it is C") == (14, 15)  # the molecule, not the pronoun
    assert molgen().check({"id": "i", "target": "I"}, "I").correct  # alone, it is hydrogen iodide
    for text in ("The answer is C.", "It is CO2", "Cl", "Br", "NaCl", "CH3CH2OH"):  # attempts, right or wrong
        assert molgen().check(MOL, text).attempted, text


def test_the_prompt_restated_is_no_attempt() -> None:
    ex = {"id": "d", "description": "The molecule is aspirin, an acetyl derivative of salicylic acid (CO2H).",
          "target": ASPIRIN}
    task = molgen()
    for text in (ex["description"], "The molecule is aspirin, an acetyl", f"  {ex['description']}\n"):
        cert = task.check(ex, text)
        assert cert.verdict == "restates_prompt" and not cert.attempted, text
    cert = task.check(ex, ex["description"] + f" SMILES: {ASPIRIN}")  # restating it, then answering: an answer
    assert cert.correct and cert.attempted


# ---- certificates -------------------------------------------------------------------------------
def test_exact_answer_is_correct_with_prose_around() -> None:
    task = molgen()
    for text in (ASPIRIN, "OC(=O)c1ccccc1OC(C)=O", f"SMILES: {ASPIRIN}", f"It is `{ASPIRIN}`."):
        cert = task.check(MOL, text)
        assert cert.verdict == "correct" and cert.correct and cert.score == pytest.approx(1.0), text
        assert cert.answer == canonical(Chem.MolFromSmiles(ASPIRIN))
        assert not [s for s in cert.spans if s.reward < 0]


def test_invalid_atoms_get_the_negative_reward_and_the_matched_ones_credit() -> None:
    # Aspirin with a fifth bond on its carboxyl carbon: one atom to blame, the other 13 right.
    task = molgen()
    text = "Answer: CC(=O)Oc1ccccc1C(=O)(O)C"
    cert = task.check(MOL, text)
    start = text.index("CC(")
    assert cert.verdict == "chemistry_error" and cert.attempted
    assert [(s.start - start, s.reward) for s in cert.spans if s.reward < 0] == [(15, -1.0)]  # the C with 5 bonds
    credited = [s for s in cert.spans if s.reward > 0]
    assert all(s.reward == pytest.approx(0.5 / 14) for s in credited)  # clean_reward / max(14 atoms, 13)
    assert 9 <= len(credited) <= 12  # the atoms whose neighbourhoods the reference has (not the blamed one's)
    assert cert.score == pytest.approx(-0.5 + 0.8 * cert.info["similarity"]) and cert.score > -0.5


def test_syntax_error_credits_only_matched_atoms_of_the_prefix() -> None:
    text = "CCO)CC"
    cert = molgen().check({"id": "e", "target": "CCOCC"}, text)
    assert cert.verdict == "syntax_error"
    assert negatives(cert, text) == [(")", -1.0)]
    # C0 (a methyl on C) and C1 (bonded to C and O) have their neighbourhoods in diethyl ether; O2
    # (bonded to one C) has not; the atoms after the error are not credited.
    assert sorted(text[s.start:s.end] + str(s.start) for s in cert.spans if s.reward > 0) == ["C0", "C1"]
    assert cert.info["matched_atoms"] == 2 and cert.info["answer_atoms"] == 5


def test_kekulize_error_is_split_over_its_atoms() -> None:
    cert = molgen().check(MOL, "c1cccc1")
    errors = [s for s in cert.spans if s.reward < 0 and "kekulize" in s.message]
    assert len(errors) == 5 and sum(s.reward for s in errors) == pytest.approx(-1.0)


def test_partial_credit_is_similarity_to_the_reference() -> None:
    task = molgen()
    close = task.check(MOL, "CC(=O)Oc1ccccc1C(=O)OC")  # methyl ester of aspirin
    far = task.check(MOL, "CCCCCCCC")
    assert close.verdict == "wrong" and far.verdict == "unrelated"
    assert -0.5 < far.score < close.score < 1
    assert close.score == pytest.approx(-0.5 + 0.1 + 0.8 * close.info["similarity"])
    assert close.info["morgan_sim"] == pytest.approx(tanimoto(Chem.MolFromSmiles("CC(=O)Oc1ccccc1C(=O)OC"),
                                                              Chem.MolFromSmiles(ASPIRIN), "morgan"))
    assert not negatives(close, "CC(=O)Oc1ccccc1C(=O)OC")  # a near miss: no atom to blame
    assert sum(s.reward for s in far.spans if s.reward < 0) == pytest.approx(-1.0)  # unrelated: its unmatched atoms
    weighted = molgen(similarity_reward=0.5, valid_reward=0.0, base_score=0.0).check(MOL, "CC(=O)Oc1ccccc1C(=O)OC")
    assert weighted.score == pytest.approx(0.5 * close.info["similarity"])


def test_component_order_does_not_matter_and_stereo_is_an_option() -> None:
    salt = {"id": "s", "target": "[Na+].[O-]C(=O)C"}
    assert molgen().check(salt, "CC(=O)[O-].[Na+]").correct
    chiral = {"id": "c", "target": "C[C@H](N)C(=O)O"}
    assert not molgen().check(chiral, "C[C@@H](N)C(=O)O").correct
    assert not molgen().check(chiral, "CC(N)C(=O)O").correct
    assert molgen(stereo=False).check(chiral, "C[C@@H](N)C(=O)O").correct


def test_charges_and_isotopes_count() -> None:
    assert not molgen().check({"id": "i", "target": "[13CH4]"}, "C").correct
    assert molgen().check({"id": "i", "target": "[13CH4]"}, "[13CH4]").correct
    assert not molgen().check({"id": "q", "target": "C[NH3+]"}, "CN").correct


def test_every_verdict_is_declared() -> None:
    task = molgen()
    texts = [ASPIRIN, "CCC", "CC(C", "c1cccc1", "C" * 2000, "no smiles here at all", ""]
    assert {task.check(MOL, t).verdict for t in texts} <= set(VERDICTS)


def test_bad_options_are_refused() -> None:
    with pytest.raises(TaskError, match="base_score"):
        molgen(similarity_reward=1.5)  # a wrong answer could score above a right one
    with pytest.raises(TaskError, match="base_score"):
        molgen(valid_reward=0.5, similarity_reward=0.4)  # validity would weigh more than similarity
    with pytest.raises(TaskError, match="related_min"):
        molgen(related_min=-1)
    with pytest.raises(TaskError, match="unknown option"):
        molgen(exact_weight=1)  # gone: the score is similarity, not a weighted mean of fingerprints


# ---- reactions ----------------------------------------------------------------------------------
def test_unexplained_atoms_are_counted_per_element() -> None:
    product = Chem.MolFromSmiles("BrCC(Br)Cl", sanitize=False)
    sources = Chem.MolFromSmiles("CC.Br", sanitize=False)
    assert unexplained_atoms(product, sources) == {"Br": [3], "Cl": [4]}
    assert unexplained_atoms(sources, product) == {}


def test_forward_flags_the_product_atoms_the_reactants_lack() -> None:
    task = get_task("forward")
    ex = {"id": "f", "source": "CCO.CC(=O)Cl", "target": "CCOC(C)=O"}
    assert task.check(ex, "CCOC(C)=O").verdict == "correct"
    text = "CCOC(C)=O.[Au]Br"
    cert = task.check(ex, text)
    assert cert.verdict == "unexplained_atoms" and not cert.correct
    assert sorted(negatives(cert, text)) == [("Br", -0.5), ("[Au]", -0.5)]
    assert "1 Au, 1 Br" in cert.spans[[s.reward < 0 for s in cert.spans].index(True)].message


def test_retro_names_what_the_reactants_cannot_explain() -> None:
    task = get_task("retro")
    ex = {"id": "r", "source": "CCOC(C)=O", "target": "CCO.CC(=O)Cl"}
    assert task.check(ex, "CC(=O)Cl.OCC").correct
    text = "CCO.CC"
    cert = task.check(ex, text)
    assert cert.verdict == "unexplained_atoms"
    assert negatives(cert, text) == [(text, -1.0)]
    assert "cannot account for 1 O of the product" in [s for s in cert.spans if s.reward < 0][0].message
    assert cert.info["unexplained"] == {"O": [5]}  # the product's second O (atoms C0 C1 O2 C3 C4 O5)


# ---- metrics ------------------------------------------------------------------------------------
def test_string_metrics() -> None:
    assert char_bleu([ASPIRIN, "c1ccccc1CCO"], [ASPIRIN, "c1ccccc1CCO"]) == pytest.approx(1.0)
    assert char_bleu([ASPIRIN], ["N"]) < 0.01
    assert levenshtein("CCO", "CCN") == 1 and levenshtein("", "CCO") == 3


def test_corpus_metrics_follow_molt5() -> None:
    task = molgen()
    examples = [MOL, {"id": "e", "target": "CCO"}, {"id": "b", "target": "c1ccccc1"}]
    texts = [ASPIRIN, "CCN", "C1CC"]
    certs = [task.check(ex, t) for ex, t in zip(examples, texts)]
    m = task.corpus_metrics(examples, texts, certs)
    assert m["exact"] == pytest.approx(1 / 3) and m["validity"] == pytest.approx(2 / 3)
    # fingerprint similarity over the valid answers only, as MolT5 reports it
    assert m["maccs_fts"] == pytest.approx((1.0 + certs[1].info["maccs_sim"]) / 2)
    assert m["levenshtein"] == pytest.approx((0 + 1 + levenshtein("C1CC", "c1ccccc1")) / 3)
    assert 0 < m["bleu"] < 1
    per = task.metrics(examples[2], certs[2])
    assert per == {"success": 0.0, "validity": 0.0, "morgan_sim": 0.0, "maccs_sim": 0.0, "rdk_sim": 0.0}


# ---- pictures -----------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_answer_grid_draws_valid_invalid_and_unparsable_answers(tmp_path: Path, suffix: str) -> None:
    task = get_task("forward")
    ex = {"id": "f", "source": "CCO.CC(=O)Cl", "target": "CCOC(C)=O"}
    texts = ["CCOC(C)=O", "C(C)(C)(C)(C)C", "CC(C", "CCOC(C)=O.[Au]", ""]
    certs = [task.check(ex, t) for t in texts]
    path = task.draw([ex] * len(texts), texts, certs, tmp_path / f"grid{suffix}")
    data = path.read_bytes()
    if suffix == ".png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    else:
        text = data.decode()
        assert text.lstrip().startswith(("<?xml", "<svg")) and "</svg>" in text  # legends are drawn as paths
        assert "#F24C4C" in text.upper()  # the flagged atoms' red highlight (0.95, 0.3, 0.3)


# ---- data ---------------------------------------------------------------------------------------
def test_malformed_rows_are_counted_and_reported(tmp_path: Path, capsys) -> None:
    f = tmp_path / "mols.txt"
    f.write_text("CID\tSMILES\tdescription\n"
                 "1\tCCO\tThe molecule is ethanol.\n"
                 "2\tC(C\tAn unparsable reference.\n"
                 "3\tCC\n"
                 "4\t\tNo SMILES.\n"
                 "5\tC/C=C\\\\C\tA doubled backslash.\n")
    task = molgen(train_file=str(f))
    examples = task.load("train")
    assert [ex["id"] for ex in examples] == ["chebi:1", "chebi:5"]
    assert examples[1]["target"] == "C/C=C\\C"
    assert len(task.malformed["train"]) == 3
    err = capsys.readouterr().err
    assert "3 malformed rows skipped" in err and "line 3" in err


def test_reaction_csv_errors(tmp_path: Path) -> None:
    f = tmp_path / "r.csv"
    f.write_text("reactants_smiles,products_smiles\nCCO.CC(=O)Cl,CCOC(C)=O\nCCO,\n\"a,b\",c,d\nC1CC,CC\n")
    task = get_task("retro", train_file=str(f))
    examples = task.load("train")
    assert [(ex["source"], ex["target"]) for ex in examples] == [("CCOC(C)=O", "CCO.CC(=O)Cl")]
    assert len(task.malformed["train"]) == 3
    wrong = tmp_path / "w.csv"
    wrong.write_text("a,b\n1,2\n")
    with pytest.raises(TaskError, match="expected a header with columns"):
        get_task("retro", train_file=str(wrong)).load("train")
    with pytest.raises(TaskError, match="cannot find|not found"):
        get_task("retro", train_file=str(tmp_path / "missing.csv"), data_dir=str(tmp_path)).load("train")


@pytest.mark.parametrize("name, sizes", [
    ("molgen", {"train": 3301, "test": 3300, "design100": 100}),
    ("forward", {"test": 100}),
    ("retro", {"test": 100}),
])
def test_shipped_data_loads_whole(name: str, sizes: dict[str, int], shared_data) -> None:
    task = get_task(name)
    for split, n in sizes.items():
        examples = task.load(split)
        assert len(examples) == n and task.malformed[split] == []
        assert len({ex["id"] for ex in examples}) == n
        ex = examples[0]
        assert task.check(ex, task.demonstration(ex)).correct
        assert task.prompt(ex)[-1]["content"]


def test_uspto_train_references_all_parse(shared_data) -> None:
    # 40,029 reactions, both sides parsed by RDKit on the first load (then remembered).
    forward, retro = get_task("forward"), get_task("retro")
    a, b = forward.load("train"), retro.load("train")
    assert len(a) == len(b) == 40029 and forward.malformed["train"] == []
    assert (a[0]["source"], a[0]["target"]) == (b[0]["target"], b[0]["source"])


def test_check_cli_writes_a_picture(tmp_path: Path, capsys, shared_data) -> None:
    from rlsf.cli.main import main

    image = tmp_path / "quercetin.png"
    completion = tmp_path / "c.txt"
    completion.write_text("O=c1c(O)c(-c2ccc(O)c(O)c2)oc2cc(O)cc(O)c12")
    code = main(["check", "--task", "molgen", "--example", "chebi:5280343", "--completion", str(completion),
                 "--image", str(image), "--json", "--check.workers", "0"])
    assert code == 0 and image.read_bytes()[:4] == b"\x89PNG"
    out = json.loads(capsys.readouterr().out)
    assert out["certificate"]["verdict"] == "correct"
    assert main(["check", "--task", "game24", "--example", "901", "--completion", str(completion),
                 "--image", str(image)]) != 0



@pytest.mark.parametrize("name", ["molgen", "forward", "retro"])
def test_sft_train_and_eval_run_on_chemistry(name: str, tiny_model_dir, tmp_path: Path, shared_data) -> None:
    """The whole engine on each chemistry task with a tiny random model: SFT on the references, an
    RL step whose completions (garbage) RDKit certifies, evaluation with the literature's
    figures and the picture."""
    from test_training import tiny_cfg

    from rlsf.stages.evaluate import evaluate
    from rlsf.stages.sft import sft
    from rlsf.stages.train import RLTrainer

    common = {"task.name": name, "task.options": {"data_dir": str(shared_data)}, "rollout.max_new_tokens": 12,
              "eval.num_examples": 3, "eval.k": 2, "eval.max_new_tokens": 12, "sft.steps": 1, "sft.batch_size": 2}
    sft(tiny_cfg(tiny_model_dir, tmp_path / "sft", **common))
    metrics = RLTrainer(tiny_cfg(tiny_model_dir, tmp_path / "rl", **common, **{"train.steps": 1})).train()
    assert metrics["check/failed"] == 0.0
    assert sum(v for k, v in metrics.items() if k.startswith("feedback/verdict/")) == pytest.approx(1.0)
    res = evaluate(tiny_cfg(tiny_model_dir, tmp_path / "ev", **common))
    assert {"greedy/success", "greedy/validity", "pass@2/validity", "best@2/morgan_sim", "greedy/exact",
            "greedy/bleu", "greedy/levenshtein", "greedy/morgan_fts", "greedy/maccs_fts", "greedy/rdk_fts"} <= set(res)
    assert set(res["verdicts"]) <= set(VERDICTS)
    assert (tmp_path / "ev" / "run" / "eval_molecules.png").read_bytes()[:4] == b"\x89PNG"


def test_a_long_reference_is_within_the_length_limit() -> None:
    # ChEBI-20 has references over 1,000 characters (found by the fuzz run): the limit grows with them.
    long = "C" * 1100 + "O"
    ex = {"id": "l", "target": long}
    assert molgen().check(ex, long).correct
    assert molgen().check(ex, long * 3).verdict == "too_long"


def test_reaction_answers_that_repeat_the_prompt_are_no_reaction() -> None:
    # Found in the RL runs: the policy gave back the solvent (forward) or the product (retro).
    # They are no answer: a no-attempt certificate, below every honest attempt.
    fwd = get_task("forward")
    ex = {"id": "f", "source": "C1CCOC1.CCO.CC(=O)Cl", "target": "CCOC(C)=O"}
    for answer in ("C1CCOC1", "OCC", "Product: CCO", "CC(=O)Cl.OCC", "O1CCCC1"):
        cert = fwd.check(ex, answer)
        assert cert.verdict == "copies_input" and cert.score == -1.0 and not cert.attempted, answer
    assert "among the reactants" in fwd.check(ex, "C1CCOC1").spans[0].message
    assert fwd.check(ex, "C1CCOC1.CCO.CC(=O)Cl").verdict == "restates_prompt"
    assert fwd.check(ex, "CCOC(C)=O").correct
    chiral = {"id": "c", "source": "C[C@H](N)C(=O)O.CO", "target": "COC(=O)[C@@H](C)N"}
    assert fwd.check(chiral, "CC(N)C(=O)O").verdict == "copies_input"  # a reactant without its stereo: still a copy
    retro = get_task("retro")
    rx = {"id": "r", "source": "CCOC(C)=O", "target": "CCO.CC(=O)Cl"}
    for answer in ("O=C(C)OCC", "CCOC(C)=O.O", "CCOC(C)=O.CC"):
        cert = retro.check(rx, answer)
        assert cert.verdict == "copies_input" and cert.score == -1.0 and not cert.attempted, answer
    assert retro.check(rx, "CCOC(C)=O").verdict == "restates_prompt"
    assert retro.check(rx, "OCC.CC(Cl)=O").correct
    assert molgen().check(MOL, ASPIRIN).correct  # molecule generation has no input molecule to copy


# ---- what RL farmed, and what it earns now --------------------------------------------------------
PALMITIC = "CCCCCCCCCCCCCCCC(=O)O"  # 18 heavy atoms, 15 of them a chain


def totals(task, ex, text) -> list[float]:
    cert = task.check(ex, text)
    return [total_reward(cert, text, preset, mode) for preset, mode in SHAPINGS]


def test_atoms_match_by_neighbourhood_one_to_one() -> None:
    ref, n = reference_neighbourhoods(Chem.MolFromSmiles(PALMITIC))
    assert n == 18
    found = match(Chem.MolFromSmiles("C" * 40), ref, n)
    # the methyl end and as many chain carbons as the reference has: the rest of the chain matches nothing
    assert found.matched == list(range(15)) and found.unmatched == list(range(15, 40))
    same = match(Chem.MolFromSmiles("OC(=O)CCCCCCCCCCCCCCC"), ref, n)  # the same molecule written backwards
    assert same.similarity == 1.0 and not same.unmatched
    kekule = match(Chem.MolFromSmiles("C1=CC=CC=C1", sanitize=False), *reference_neighbourhoods(
        Chem.MolFromSmiles("c1ccccc1")))
    assert kekule.similarity == 1.0  # aromaticity is perceived before matching


def test_salvage_reads_the_part_before_a_syntax_error() -> None:
    for smiles, readable in [("CC(=O)Oc1ccccc1C(=O)O(", "CC(=O)Oc1ccccc1C(=O)O"), ("CCO)CC", "CCO"),
                             ("C1CC", "CCC"), ("c1ccccc1C(=", "Cc1ccccc1")]:
        mol = salvage(diagnose(smiles))
        assert mol is not None and Chem.MolToSmiles(mol) == Chem.MolToSmiles(Chem.MolFromSmiles(readable)), smiles
    assert salvage(diagnose("C" * 2000, 1000)) is None  # too long: not read at all


def test_alkane_to_the_token_limit_is_flagged_past_the_reference() -> None:
    # Found in the RL runs: 77 of 100 molgen answers were straight-chain alkanes to the token limit.
    task = molgen()
    ex = {"id": "p", "target": PALMITIC}
    text = "C" * 40
    cert = task.check(ex, text)
    assert cert.verdict == "unrelated" and cert.attempted and not cert.correct
    flagged = sorted(s.start for s in cert.spans if s.reward < 0)
    credited = sorted(s.start for s in cert.spans if s.reward > 0)
    assert flagged == list(range(15, 40)) and credited == list(range(15))  # the chain past the reference's
    assert sum(s.reward for s in cert.spans if s.reward > 0) == pytest.approx(0.5 * 15 / 40)
    # unrelated_reward per reference size of unmatched atoms: 25 unmatched for 18 reference atoms
    assert sum(s.reward for s in cert.spans if s.reward < 0) == pytest.approx(-25 / 18)
    assert cert.score == pytest.approx(-0.5 + 0.8 * cert.info["similarity"])  # no validity bonus: unrelated
    limit = task.check(ex, "C" * 400)
    assert sum(s.reward for s in limit.spans if s.reward < 0) == pytest.approx(-4.0)  # unrelated_cap
    assert limit.score < cert.score < task.check(ex, "CCCCCCCCCCCCCCCC(=O)N").score  # longer earns less
    text_limit = "C" * 400
    garbage = task.check(ex, "CC(C")  # an invalid answer with a syntax error: the to-the-limit alkane earns less
    assert total_reward(limit, text_limit) < min(total_reward(cert, text), total_reward(garbage, "CC(C"))


def test_similarity_outweighs_validity() -> None:
    # An invalid answer one atom away from the reference scores above any valid molecule unrelated to it.
    task = molgen()
    invalid = task.check(MOL, invalid_variant(ASPIRIN))
    assert invalid.verdict == "chemistry_error"
    for hack in ("CCO", "C", "C" * 40, "C" * 400, "c1ccccc1"):
        cert = task.check(MOL, hack)
        assert cert.info["valid"] == 1.0 and cert.verdict == "unrelated"
        assert cert.score < invalid.score, hack
        assert [a < b for a, b in zip(totals(task, MOL, hack), totals(task, MOL, invalid_variant(ASPIRIN)))] \
            == [True] * len(SHAPINGS), hack


@pytest.mark.parametrize("smiles", [ASPIRIN, PALMITIC, "C1CC1", "CCO.CC(=O)Cl", "O=C(O)c1ccccc1N", "C[C@H](N)C(=O)O"])
def test_near_misses_are_one_slip_and_honest(smiles: str) -> None:
    variants = one_slip_variants(smiles)
    assert variants and all(canonical(Chem.MolFromSmiles(v)) != canonical(Chem.MolFromSmiles(smiles))
                            for v in variants.values())
    task = molgen()
    ex = {"id": "n", "target": smiles}
    for name, text in task.near_misses(ex).items():
        cert = task.check(ex, text)
        assert cert.attempted and not cert.correct, name
        if cert.info["valid"]:
            assert cert.verdict == "wrong" and not negatives(cert, text), (name, text)  # close: nothing to blame
        else:
            assert name == "valence error" and cert.verdict == "chemistry_error"
            assert len(negatives(cert, text)) == 1  # one atom to blame


def test_near_misses_and_hacks_of_the_reactions() -> None:
    fwd, retro = get_task("forward"), get_task("retro")
    ex = {"id": "f", "source": "C1CCOC1.CCO.CC(=O)Cl", "target": "CCOC(C)=O"}
    hacks = fwd.reward_hacks(ex)
    assert {"a reactant copied", "the solvent copied", "all inputs copied", "alkane"} <= set(hacks)
    assert all(not fwd.check(ex, hacks[k]).attempted for k in ("a reactant copied", "the solvent copied",
                                                                "all inputs copied"))
    for text in fwd.near_misses(ex).values():
        assert fwd.check(ex, text).attempted and fwd.check(ex, text).verdict != "unexplained_atoms"
    rx = {"id": "r", "source": "CCOC(C)=O", "target": "CCO.CC(=O)Cl"}
    hacks = retro.reward_hacks(rx)
    assert not retro.check(rx, hacks["the product copied"]).attempted
    assert not retro.check(rx, hacks["the product and water"]).attempted
    assert "atom added" in retro.near_misses(rx)  # retro adds rather than removes: its reactants must keep
    for text in retro.near_misses(rx).values():   # every atom of the product
        assert retro.check(rx, text).verdict in ("wrong", "chemistry_error")


@pytest.mark.parametrize("name", ["molgen", "forward", "retro"])
def test_hacks_earn_less_than_near_misses_on_shipped_examples(name: str, shared_data) -> None:
    # The rule of tests/test_reward_ordering.py on more examples than it takes (every 4th reaction).
    task = get_task(name)
    examples = task.load("test")
    examples = examples[::100] if name == "molgen" else examples[::4]
    report = reward_ordering(task, examples)
    assert report, "\n".join(report.violations)


def test_no_attempt_verdicts_are_declared() -> None:
    assert set(NO_ATTEMPT) < set(VERDICTS)
    task = molgen()
    texts = ["", "I don't know.", "CCC", "C" * 40, "CC(C", "c1cccc1", "C" * 2000, ASPIRIN]
    for text in texts:
        cert = task.check(MOL, text)
        assert cert.verdict in VERDICTS and (cert.verdict in NO_ATTEMPT) == (not cert.attempted), text
