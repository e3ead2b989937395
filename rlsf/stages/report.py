"""``rlsf report RUN_DIR``: one self-contained HTML page of a run that opens offline.

It reads the folders rlsf writes (docs/run-folder.md) and shows whatever is in them:

* a pipeline folder (``rlsf pipeline``: summary.json, eval_*.json, sft/, rl/, sft_more/);
* one stage's folder (``rlsf train``, ``sft``, ``orm``: metrics.jsonl, config.yaml);
* an evaluation's folder (``rlsf eval``: eval.json, eval_samples.jsonl);
* an experiment folder (``rlsf experiment``: results.json, arms/, eval/).

The sections: the run (task, model, algorithm, seed, machine and precision, stage times); the
held-out figures (the before/after table with the paired changes and their 95% intervals, or an
experiment's table); training curves (drawn here by :func:`rlsf.runtime.plots.plot_metrics` and
the experiment's own plots); example greedy completions with every token coloured by the reward
it earns; the task's pictures (molecule grids of the chemistry tasks); and what was left out, why.

Token rewards are recomputed as training computes them (:mod:`rlsf.stages.report_tokens`): the
certificate stored beside each completion in the samples file, spread over the tokens by
:func:`rlsf.feedback.rewards.certificate_token_rewards` under the run's reward settings (as
``rlsf check --tokens`` does). The tokens are the run's own tokenizer's where its folder holds a
model (``tokens="auto"`` or ``"model"``), else word pieces (``"words"``: a word or punctuation
mark with the whitespace before it). Every completion ends with the end-of-turn token, which
carries the score; a completion cut by the length limit ended on its last text token instead (the
samples file does not record which).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlsf.errors import RlsfError
from rlsf.stages import report_html as h
from rlsf.stages.pipeline import EVAL_FILES
from rlsf.stages.report_tokens import Tokens, certificate_of, merged, token_rewards

TOKENS = ("auto", "model", "words")
KINDS = {"pipeline": "pipeline (SFT, evaluation, RL, evaluation)", "stage": "one training stage",
         "eval": "an evaluation", "experiment": "an experiment (arms compared from one start)"}
#: The pipeline's evaluations (their files: :data:`rlsf.stages.pipeline.EVAL_FILES`) as the tables head them.
LABELS = {"before": "SFT", "after": "SFT+RL", "baseline": "SFT+SFT"}
STAGES = {"sft": "SFT", "rl": "RL", "sft_more": "SFT continued (the equal-time baseline)"}
#: The curves drawn for a stage (those it logged), then every ``feedback/*`` figure of the task's checker.
CURVE_KEYS = ("reward/total", "reward/success", "kl", "response/length", "entropy", "batch/answer_mode_share",
              "loss/policy", "loss/sft")
PICTURE_ROWS = 12  # completions per drawn picture (the evaluation's own picture draws as many)


class ReportError(RlsfError):
    """A folder or setting the report cannot be made from."""


@dataclass
class Evaluation:
    """One evaluation of the run: its label, figures, samples file and reward settings."""

    label: str
    figures: dict[str, Any]
    samples: Path
    reward: dict[str, Any]


@dataclass
class Run:
    """A run folder being reported on: what it is, its settings, and the notes of what was left out."""

    root: Path
    kind: str
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    _task: Any = None
    _splits: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def setting(self, dotted: str, default: Any = None) -> Any:
        section, _, name = dotted.partition(".")
        return (self.config.get(section) or {}).get(name, default)

    def task_name(self) -> str:
        return str(self.setting("task.name") or next((e.figures.get("task") for e in evaluations(self)), "") or "")

    def task(self):
        """The run's task, built once; None (with a note) where it cannot be."""
        if self._task is None and self.task_name():
            from rlsf.tasks import get_task

            try:
                self._task = get_task(self.task_name(), **(self.setting("task.options") or {}))
            except (RlsfError, OSError, ImportError) as e:
                self.notes.append(f"task {self.task_name()!r} could not be built ({e}): no prompts or pictures")
                self._task = False
        return self._task or None

    def examples(self, split: str) -> dict[str, dict[str, Any]]:
        """The task's ``split`` by example id (empty, with a note, where its data cannot be loaded)."""
        if split not in self._splits:
            self._splits[split] = {}
            task = self.task()
            if task is not None:
                try:
                    self._splits[split] = {str(ex.get("id")): ex for ex in task.load(split)}
                except (RlsfError, OSError, ImportError) as e:
                    self.notes.append(f"the {split} split of {task.name} could not be loaded ({e}): no prompts")
        return self._splits[split]


# ---- reading a run folder -----------------------------------------------------------------------
def read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as e:
        raise ReportError(f"{path}: cannot read it as JSON ({e})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def read_rows(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a line that is not one (a run still writing) is skipped."""
    if not path.is_file():
        return []
    rows, bad = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line) if line.strip() else None
        except ValueError:
            row, bad = None, bad + 1
        if isinstance(row, dict):
            rows.append(row)
    if bad:
        notes.append(f"{path}: {bad} line(s) that are not JSON records were skipped")
    return rows


def read_config(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    except (yaml.YAMLError, OSError) as e:
        raise ReportError(f"{path}: cannot read it as YAML ({str(e).splitlines()[0]})") from None
    return data if isinstance(data, dict) else {}


def run_kind(root: Path) -> str:
    """Which kind of run folder ``root`` is (:data:`KINDS`); a folder that is none is refused."""
    if not root.is_dir():
        raise ReportError(f"{root}: no such folder")
    if (root / "results.json").is_file() and "arms" in (read_json(root / "results.json") or {}):
        return "experiment"
    if (root / "summary.json").is_file() or any((root / f).is_file() for f in EVAL_FILES.values()) \
            or any((root / d / "metrics.jsonl").is_file() for d in STAGES):
        return "pipeline"
    if (root / "metrics.jsonl").is_file():
        return "stage"
    if any(root.glob("*_samples.jsonl")) or (root / "eval.json").is_file():
        return "eval"
    raise ReportError(f"{root} is not a run folder: it has none of summary.json, metrics.jsonl, eval.json, "
                      "results.json (the folders of rlsf pipeline, train/sft, eval and experiment)")


def reward_settings(config: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The token-reward settings of a run (its config's ``reward`` section, an arm's overrides)."""
    from rlsf.config import RewardConfig

    d = RewardConfig()
    out = {"preset": d.preset, "mode": d.mode, "spread_spans": d.spread_spans, "span_weight": d.span_weight}
    out.update({k: v for k, v in (config.get("reward") or {}).items() if k in out})
    out.update({k.split(".", 1)[1]: v for k, v in (overrides or {}).items()
                if k.startswith("reward.") and k.split(".", 1)[1] in out})
    return out


def evaluations(run: Run) -> list[Evaluation]:
    """The run's evaluations that left figures or samples, in the order the tables show them."""
    root, out = run.root, []
    base = reward_settings(run.config)
    if run.kind == "pipeline":
        summary = read_json(root / "summary.json") or {}
        for key, name in EVAL_FILES.items():
            figures = summary.get(key) or read_json(root / name)
            samples = root / name.replace(".json", "_samples.jsonl")
            if figures or samples.is_file():
                out.append(Evaluation(LABELS[key], figures or {}, samples, base))
    elif run.kind == "eval":
        for samples in sorted(root.glob("*_samples.jsonl")):
            stem = samples.name.removesuffix("_samples.jsonl")
            out.append(Evaluation(stem, read_json(root / f"{stem}.json") or {}, samples, base))
        if not out and (root / "eval.json").is_file():
            out.append(Evaluation("eval", read_json(root / "eval.json") or {}, root / "eval_samples.jsonl", base))
    elif run.kind == "experiment":
        results = read_json(root / "results.json") or {}
        out.append(Evaluation(str(results.get("start", "SFT (start)")), results.get("sft") or {},
                              root / "eval" / "sft_samples.jsonl", base))
        groups: dict[str, list[str]] = {}
        for name, arm in (results.get("arms") or {}).items():
            groups.setdefault(arm.get("arm", name), []).append(name)
        for group, names in groups.items():  # with seeds, the first seed's last evaluation
            arm = results["arms"][names[0]]
            last = (arm.get("curve") or [{}])[-1]
            samples = root / "eval" / f"{names[0]}@{last.get('samples')}_samples.jsonl"
            out.append(Evaluation(group, last, samples, reward_settings(run.config, arm.get("settings"))))
    return out


def runtime_block(run: Run) -> dict[str, Any]:
    """What the runtime decided (device, precision, processor...), from the first stage that says."""
    candidates = [run.root / "config.yaml"] + [run.root / d / "config.yaml" for d in ("rl", "sft", "sft_more")]
    candidates += sorted((run.root / "arms").glob("*/config.yaml")) if run.kind == "experiment" else []
    blocks = [read_config(p).get("runtime") or {} for p in candidates if p.is_file()]
    found = next((b for b in blocks if "device" in b), {})
    return {**(blocks[0] if blocks else {}), **found}


# ---- tokens -------------------------------------------------------------------------------------
def make_tokens(run: Run, how: str) -> Tokens:
    """The tokens completions are coloured by (``how``: :data:`TOKENS`; module docstring)."""
    folder = tokenizer_folder(run) if how != "words" else None
    if how == "model" and folder is None:
        raise ReportError(f"--tokens model: no model folder with a tokenizer in {run.root}")
    if folder is None:
        if how == "auto":
            run.notes.append("no model folder with a tokenizer in the run: tokens are word pieces")
        return Tokens()
    try:
        return Tokens(folder)
    except (RlsfError, OSError, ValueError) as e:
        if how == "model":
            raise ReportError(f"--tokens model: {e}") from None
        run.notes.append(f"the tokenizer of {folder} could not be loaded ({e}): tokens are word pieces")
        return Tokens()


def tokenizer_folder(run: Run) -> Path | None:
    """A model folder of the run holding its tokenizer (the RL model's first), or None."""
    root = run.root
    names = {"pipeline": ["rl/model", "sft/model", "sft_more/model"], "stage": ["model"],
             "experiment": ["sft/model", *sorted(str(p.relative_to(root)) for p in root.glob("arms/*/model"))]}
    candidates = [root / n for n in names.get(run.kind, [])]
    candidates += [Path(str(e.figures["model"])) for e in evaluations(run) if e.figures.get("model")]
    for p in candidates:
        if p.is_dir() and ((p / "tokenizer.json").is_file() or (p / "tokenizer_config.json").is_file()):
            return p
    return None


# ---- sections -----------------------------------------------------------------------------------
def summary_section(run: Run) -> str:
    evals = evaluations(run)
    first = next((e.figures for e in evals if e.figures), {})
    rows = [("folder", h.esc(run.root)), ("kind", h.esc(KINDS[run.kind]))]
    if run.task_name():
        options = run.setting("task.options") or {}
        rows.append(("task", h.esc(run.task_name()) + (f" (options {h.esc(options)})" if options else "")))
    model = run.setting("model.name") or first.get("model")
    if model:
        rows.append(("model", h.esc(model)))
    if run.kind in ("pipeline", "experiment") or (run.kind == "stage" and run.setting("train.algorithm")):
        r = reward_settings(run.config)
        rows.append(("algorithm", h.esc(f"{run.setting('train.algorithm', '-')}; rewards: {r['preset']} preset, "
                                          f"{r['mode']}-level")))
    if run.setting("run.seed") is not None:
        rows.append(("seed", h.esc(run.setting("run.seed"))))
    if run.kind == "pipeline":
        rows.append(("steps", h.esc(f"SFT {run.setting('sft.steps', '-')}, RL {run.setting('train.steps', '-')}"
                                    + (f", equal-time baseline: {run.setting('pipeline.baseline')}"
                                       if run.setting("pipeline.baseline") else ""))))
    if first.get("num_examples"):
        k = f", k = {first['k']} samples at temperature {first.get('temperature')}" if first.get("k") else ""
        rows.append(("held-out", h.esc(f"{first['num_examples']} problems ({first.get('split', '-')} split){k}")))
    rt = runtime_block(run)
    if rt.get("device"):
        machine = [rt.get("device"), rt.get("processor"), rt.get("threads") and f"{rt['threads']} threads",
                   rt.get("torch") and f"torch {rt['torch']}",
                   rt.get("world_size") and f"{rt['world_size']} process(es)"]
        rows.append(("machine", h.esc(", ".join(str(m) for m in machine if m))))
    precision = rt.get("precision") or first.get("precision")
    if precision:
        sampling = rt.get("sampling_precision") or first.get("sampling_precision")
        text = f"{precision}" + (f" (sampling {sampling})" if sampling and sampling != precision else "")
        rows.append(("precision", h.esc(text + (f"; {rt['reason']}" if rt.get("reason") else ""))))
    times = read_json(run.root / "stage_seconds.json") or (read_json(run.root / "times.json") or {})
    if times:
        shown = ", ".join(f"{k} {float(v) / 60:.1f} min" for k, v in times.items())
        rows.append(("stage times", h.esc(f"{shown}; total {sum(float(v) for v in times.values()) / 60:.1f} min")))
    return h.pairs(rows)


def _table_keys(columns: list[dict[str, Any]]) -> list[str]:
    """The figures the before/after table shows (``rlsf pipeline``'s printed table: the @-figures,
    greedy/ and info/), in the first evaluation's order."""
    keys: list[str] = []
    for figures in columns:
        for k, v in figures.items():
            if ("@" in k or k.startswith(("greedy/", "info/"))) and isinstance(v, (int, float)) \
                    and not isinstance(v, bool) and k not in keys:
                keys.append(k)
    return keys


def _change_cell(value: float | None, low: float | None = None, high: float | None = None) -> tuple[str, str]:
    """A change, green or red where its interval (if given) excludes zero."""
    if value is None:
        return "-", ""
    sure = low is not None and high is not None and (low > 0 or high < 0)
    return h.number(value, signed=True), ("up" if value > 0 else "down") if sure else ""


def figures_section(run: Run) -> str | None:
    if run.kind == "experiment":
        from rlsf.stages.experiment import format_table

        return h.markdown_table(format_table(read_json(run.root / "results.json") or {}))
    evals = [e for e in evaluations(run) if e.figures]
    if not evals:
        return None
    columns = [e.figures for e in evals]
    head, pipeline = ["metric", *(e.label for e in evals)], run.kind == "pipeline"
    labels = [e.label for e in evals]
    diffs = [(a, b) for a, b in (("SFT+RL", "SFT"), ("SFT+RL", "SFT+SFT")) if pipeline and a in labels and b in labels]
    head += [f"{a} \u2212 {b}" for a, b in diffs]
    rows = []
    for k in _table_keys(columns):
        row = [h.esc(k), *(h.number(c.get(k)) for c in columns)]
        for a, b in diffs:
            x, y = columns[labels.index(a)].get(k), columns[labels.index(b)].get(k)
            row.append(_change_cell(x - y if isinstance(x, (int, float)) and isinstance(y, (int, float)) else None))
        rows.append(row)
    parts = [h.table(head, rows)]
    if pipeline:
        parts.append(h.paragraph("SFT: the SFT model; SFT+RL: after RL; SFT+SFT: the equal-time baseline (SFT "
                                 "continued for the RL stage's wall time). Greedy figures (maj@1, greedy/*, info/*) "
                                 "and figures of k samples.", "note"))
    summary = read_json(run.root / "summary.json") or {}
    names = {"rl_vs_sft": "RL against the SFT model", "rl_vs_baseline": "RL against the equal-time baseline"}
    for name, figures in (summary.get("changes") or {}).items():
        rows = []
        for key, c in figures.items():
            low, high = c.get("low"), c.get("high")
            interval = f"[{h.number(low, True)}, {h.number(high, True)}]"
            rows.append([h.esc(key), h.number(c.get("before")), h.number(c.get("after")),
                         _change_cell(c.get("change"), low, high), interval, h.number(c.get("n"))])
        parts.append(f"<h3>{h.esc(names.get(name, name))}: paired change, greedy</h3>")
        parts.append(h.table(["figure", "before", "after", "change", "95% interval", "problems"], rows))
    if summary.get("changes"):
        parts.append(h.paragraph("Paired over the same held-out problems: success by Newcombe's interval for paired "
                                 "proportions, the checker's figures by the normal interval of the mean paired "
                                 "difference. A change is coloured where its interval excludes zero (green up, red "
                                 "down).", "note"))
    verdicts = [c.get("verdicts") or {} for c in columns]
    if any(verdicts):
        names_ = sorted({v for d in verdicts for v in d}, key=lambda v: -sum(d.get(v, 0) for d in verdicts))
        parts.append("<h3>Verdicts of the greedy completions</h3>")
        parts.append(h.table(["verdict", *labels], [[h.esc(v), *(h.number(d.get(v, 0)) for d in verdicts)]
                                                    for v in names_]))
    return "\n".join(parts)


def _curve_keys(records: list[dict[str, Any]]) -> list[str]:
    present = {k for r in records for k, v in r.items() if isinstance(v, (int, float))}
    feedback = sorted(k for k in present if k.startswith("feedback/") and not k.startswith("feedback/verdict/"))
    return [k for k in CURVE_KEYS if k in present] + feedback


def _curve_table(records: list[dict[str, Any]], keys: list[str]) -> str:
    rows = []
    for k in keys:
        vals = [float(r[k]) for r in records if isinstance(r.get(k), (int, float))]
        if vals:
            rows.append([h.esc(k), h.number(vals[0]), h.number(vals[-1]), h.number(min(vals)), h.number(max(vals))])
    return ("<details><summary>first, last, lowest and highest values</summary>"
            + h.table(["metric", "first", "last", "min", "max"], rows) + "</details>")


def curves_section(run: Run, tmp: Path) -> str | None:
    from rlsf.runtime.plots import plot_metrics
    from rlsf.settings import ConfigError

    folders = {"pipeline": [(STAGES[d], run.root / d) for d in STAGES], "stage": [("training", run.root)],
               "experiment": [("SFT", run.root / "sft")]}.get(run.kind, [])
    parts = []
    for label, folder in folders:
        records = read_rows(folder / "metrics.jsonl", run.notes)
        keys = _curve_keys(records)
        if not keys:
            continue
        parts.append(f"<h3>{h.esc(label)} ({len(records)} steps)</h3>")
        try:
            out = plot_metrics(folder, keys, tmp / f"curves_{len(parts)}.png")
            parts.append(h.png(out.read_bytes(), f"{label} training curves", f"{folder / 'metrics.jsonl'}"))
        except (FileNotFoundError, ConfigError) as e:  # matplotlib missing: the figures below still say it
            run.notes.append(f"no curves for {label}: {e}")
        parts.append(_curve_table(records, keys))
    if run.kind == "experiment":
        parts += experiment_plots(run, tmp)
    return "\n".join(parts) or None


def experiment_plots(run: Run, tmp: Path) -> list[str]:
    """The experiment's own plots (held-out figures against samples, against KL; training metrics)."""
    from rlsf.stages.experiment import plot_experiment, plot_reward_kl, plot_training

    results = read_json(run.root / "results.json") or {}
    plots = (("Held-out figures against sampled training completions", lambda p: plot_experiment(results, p)),
             ("Held-out figure against the KL to the start", lambda p: plot_reward_kl(results, p)),
             ("Training metrics of the arms", lambda p: plot_training(run.root, results, p)))
    parts = []
    for i, (title, draw) in enumerate(plots):
        try:
            out = draw(tmp / f"experiment_{i}.png")
        except ImportError as e:
            run.notes.append(f"no experiment plots: {e}")
            break
        except (ValueError, KeyError, IndexError) as e:  # an experiment with too little to plot yet
            run.notes.append(f"no plot '{title}': {type(e).__name__}: {e}")
            continue
        if out is not None:
            parts += [f"<h3>{h.esc(title)}</h3>", h.png(Path(out).read_bytes(), title)]
    return parts


def examples_section(run: Run, n: int, how: str) -> str | None:
    evals = [e for e in evaluations(run) if e.samples.is_file()]
    if not evals or n <= 0:
        return None
    greedy = {e.label: {str(r.get("id")): r for r in read_rows(e.samples, run.notes) if r.get("kind") == "greedy"}
              for e in evals}
    ids = list(greedy[evals[0].label])[:n]
    if not ids:
        return None
    tokens = make_tokens(run, how)
    split = next((e.figures.get("split") for e in evals if e.figures.get("split")), None)
    problems = run.examples(split) if split else {}
    parts = [h.paragraph(f"The greedy completions of the first {len(ids)} held-out problems; tokens: "
                         f"{tokens.source}.", "note"), h.LEGEND]
    for pid in ids:
        parts.append('<div class="example">')
        parts.append(f"<h3>Problem {h.esc(pid)}</h3>")
        task = run.task()
        if pid in problems and task is not None:
            prompt = task.prompt(problems[pid])[-1]["content"]
            parts.append(f'<details><summary>prompt</summary><div class="prompt">{h.esc(prompt)}</div></details>')
        for e in evals:
            row = greedy[e.label].get(pid)
            parts.append(completion_html(e, row, tokens) if row else
                         f"<p><b>{h.esc(e.label)}</b>: no completion of this problem</p>")
        parts.append("</div>")
    if tokens.mismatched:
        run.notes.append(f"{tokens.mismatched} completion(s) that the tokenizer does not reproduce exactly are cut "
                         "into word pieces instead")
    return "\n".join(parts)


def completion_html(e: Evaluation, row: dict[str, Any], tokens: Tokens) -> str:
    """One completion: its verdict, score and reward total, its coloured tokens, its certificate."""
    text = str(row.get("completion", ""))
    cert = certificate_of(row.get("certificate") or {})
    pieces = token_rewards(cert, tokens.offsets(text), e.reward)
    total = sum(r for _, _, r, _ in pieces)
    head = (f"<p><b>{h.esc(e.label)}</b>: <span class=\"verdict\">{h.esc(cert.verdict)}</span>, score "
            f"{cert.score:+.3f}, token rewards {total:+.3f} ({h.esc(e.reward['preset'])} preset, "
            f"{h.esc(e.reward['mode'])}-level)" + ("; the check failed" if cert.failed else "") + "</p>")
    spans = "".join(f"<li>[{s.start}:{s.end}] {s.reward:+.3f} \u201c{h.esc(text[s.start:s.end])}\u201d: "
                    f"{h.esc(s.message)}</li>" for s in sorted(cert.spans, key=lambda s: s.start))
    info = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {str(v)[:40]}"
                     for k, v in cert.info.items() if isinstance(v, (int, float, str)))
    details = (f"<details><summary>certificate: {len(cert.spans)} span(s)"
               + (f"; {h.esc(info)}" if info else "") + "</summary>"
               + (f'<ul class="spans">{spans}</ul>' if spans else "") + "</details>")
    return head + h.coloured_completion(text, merged(pieces)) + details


def pictures_section(run: Run, tmp: Path) -> str | None:
    """The task's pictures of each evaluation's greedy completions: the ones the evaluation drew,
    else drawn here (chemistry tasks: molecule grids, with RDKit)."""
    task = run.task() if run.kind != "stage" else None
    if task is None or not task.picture:
        return None
    parts = []
    for e in evaluations(run):
        stem = e.samples.name.removesuffix("_samples.jsonl")
        drawn = e.samples.with_name(f"{stem}_{task.picture}")
        if not drawn.is_file() and e.samples.is_file():
            drawn = draw_picture(run, task, e, tmp / f"{len(parts)}_{task.picture}")
        if drawn is not None and drawn.is_file() and drawn.suffix == ".png":
            parts.append(h.png(drawn.read_bytes(), f"{e.label}: {task.picture}",
                               f"{e.label}: greedy completions beside their references (flagged atoms in red)"))
    return "\n".join(parts) or None


def draw_picture(run: Run, task, e: Evaluation, path: Path) -> Path | None:
    rows = [r for r in read_rows(e.samples, []) if r.get("kind") == "greedy"][:PICTURE_ROWS]
    split = e.figures.get("split")
    problems = run.examples(split) if split else {}
    rows = [r for r in rows if str(r.get("id")) in problems]
    if not rows:
        return None
    try:
        return task.draw([problems[str(r["id"])] for r in rows], [str(r.get("completion", "")) for r in rows],
                         [certificate_of(r.get("certificate") or {}) for r in rows], path)
    except ImportError as e_:
        run.notes.append(f"no {task.picture} for {e.label}: {e_} (the pictures need RDKit)")
    except Exception as e_:  # noqa: BLE001 -- a picture is never worth losing the report for
        run.notes.append(f"no {task.picture} for {e.label}: {type(e_).__name__}: {e_}")
    return None


# ---- the page -----------------------------------------------------------------------------------
def build_report(run_dir: str | Path, *, examples: int = 6, tokens: str = "auto") -> str:
    """The report of ``run_dir`` as one HTML document (module docstring)."""
    if examples < 0:
        raise ReportError(f"examples: {examples} is negative")
    if tokens not in TOKENS:
        raise ReportError(f"tokens: {tokens!r} is not one of {', '.join(TOKENS)}")
    root = Path(run_dir).expanduser().resolve()
    kind = run_kind(root)
    run = Run(root, kind, read_config(root / "config.yaml"))
    sections = [("run", "The run", summary_section(run))]
    with tempfile.TemporaryDirectory(prefix="rlsf-report-") as tmp:
        built = (("figures", "Held-out figures", lambda: figures_section(run)),
                 ("curves", "Training curves", lambda: curves_section(run, Path(tmp))),
                 ("examples", "Example completions", lambda: examples_section(run, examples, tokens)),
                 ("pictures", "Pictures", lambda: pictures_section(run, Path(tmp))))
        for anchor, title, make in built:
            body = make()
            if body:
                sections.append((anchor, title, body))
    if run.notes:
        sections.append(("notes", "Left out", "<ul>" + "".join(f"<li>{h.esc(n)}</li>" for n in run.notes) + "</ul>"))
    from rlsf import __version__

    task = run.task_name()
    subtitle = f"{KINDS[kind]}" + (f" \u00b7 task {task}" if task else "") + \
        f" \u00b7 made {time.strftime('%Y-%m-%d %H:%M')}"
    footer = (f"Made by rlsf report (rlsf {__version__}) from {root}. Self-contained: no scripts, nothing "
              "loaded from elsewhere; hover a token for its reward.")
    return h.page(f"rlsf report: {root.name}", subtitle, sections, footer)


def write_report(run_dir: str | Path, out: str | Path | None = None, *, examples: int = 6,
                 tokens: str = "auto") -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``RUN_DIR/report.html``); its path."""
    document = build_report(run_dir, examples=examples, tokens=tokens)
    path = Path(out) if out else Path(run_dir) / "report.html"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(document, encoding="utf-8")
    except OSError as e:
        raise ReportError(f"cannot write {path}: {e.strerror or e}") from None
    return path
