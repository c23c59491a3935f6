"""README numbers, generated: the sections of README.md between `<!-- ovt-report:NAME -->` and
`<!-- /ovt-report:NAME -->` are rendered from committed files, never typed.

    results     data/eval/metrics.json          (the evaluate stage's metrics, git-tracked)
    pipeline    benchmarks/results/pipeline.json (benchmarks/pipeline.py: per-stage wall and CPU seconds)
    benchmarks  benchmarks/results/*.json        (the headline number of each benchmark script)

and the same for the other generated documents (`DOCUMENTS`):

    docs/experiments.md  one section per sweep spec (`SWEEPS`): its `ovt sweep` results JSON, validation metrics per point

`ovt report` rewrites them; `ovt report --check` (and tests/test_report.py) fails when the README differs from what
the committed files render to. Every rendered number names the file (and key) it comes from.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from ovt.train.config import replicate_name

METRICS_FILE = "data/eval/metrics.json"
PIPELINE_FILE = "benchmarks/results/pipeline.json"
TRAIN_METRICS_FILE = "models/train_metrics/metrics.json"

# README results table: column heading -> metric key in data/eval/metrics.json (a renamed metric is one line here).
RESULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("mean", "mean_acc"),
    ("worst-view", "worst_view_acc"),
    ("canonical", "canonical_acc"),
    ("off-canonical", "off_canonical_acc"),
    ("canonical − off-canonical gap", "canonical_gap"),
    ("band (held out only for the _hv rows)", "band_acc"),
)
# Rows: metrics.json group -> what the README calls it. Groups named `a-b` are paired differences (pp).
RESULT_ROWS: tuple[tuple[str, str], ...] = (
    ("base", "base (LiT bootstrap, canonical views only)"),
    ("contrastive", "contrastive LoRA, all views (FLYP-like)"),
    ("ovt", "OVT"),
    ("contrastive_hv", "contrastive LoRA, elevations below the held-out band"),
    ("ovt_hv", "OVT, elevations below the held-out band"),
    ("ovt-contrastive", "Δ OVT − contrastive"),
    ("ovt_hv-contrastive_hv", "Δ OVT_hv − contrastive_hv (held-out viewpoints protocol)"),
)
RESULT_COUNTS = ("n_objects", "n_views", "n_classes")

# Benchmarks: (file in benchmarks/results, dotted key, what it measures, unit; "share": a fraction, shown in %).
BENCHMARKS: tuple[tuple[str, str, str, str], ...] = (
    (
        "render.json",
        "gl_stage_1_worker.views_per_s_worker",
        "render, gl backend, per worker (PNG + shards incl.)",
        "views/s",
    ),
    ("render.json", "same_objects.blender.views_per_s_worker", "render, Blender Cycles backend, per worker", "views/s"),
    ("caption_speed.json", "template_captioner_captions_per_s", "template captioner", "captions/s"),
    (
        "train.json",
        "steps.step_ovt_s_median",
        "OVT train step, embedded model, 224 px NCHW (a loaded machine: see the file)",
        "s",
    ),
    ("train.json", "steps.step_contrastive_s_median", "contrastive train step, same batch", "s"),
    (
        "train.json",
        "steps.mining_full_vs_epoch_pct",
        "hard-view mining pass (`full_pass`), share of an epoch",
        "%",
    ),
    (
        "mining.json",
        "mining_share.fast",
        "the same on the default pipeline's data (160 px, cached prefix; adapters folded, no autograd)",
        "share",
    ),
    (
        "mining.json",
        "flops.share_at_train_rate",
        "what that pass would cost at the train steps' FLOP rate (FLOPs counted: a pass over every view / an epoch)",
        "share",
    ),
    (
        "render_full.json",
        "views_per_cpu_s",
        "render stage, gl backend, whole stage (see the file for the load)",
        "views/CPU-s",
    ),
    ("caption_full.json", "captions_per_cpu_s", "caption stage, template captioner, whole stage", "captions/CPU-s"),
    (
        "bench_eval.json",
        "tail_on_prefix_ms_per_image",
        "evaluate, a tuned model's tail on the stored prefix",
        "ms/image",
    ),
    ("bench_eval.json", "full_tower_ms_per_image", "evaluate, the full image tower (what the store saves)", "ms/image"),
    ("layout.json", "summary.frozen_pass_224_nchw_ms", "frozen image-tower pass, 224 px, NCHW (before)", "ms/image"),
    (
        "layout.json",
        "summary.frozen_pass_160_channels_last_ms",
        "the same at 160 px, channels-last (default)",
        "ms/image",
    ),
    ("layout.json", "summary.train_step_224_nchw_ms", "train step (tail fwd+bwd), 224 px, NCHW (before)", "ms/image"),
    (
        "layout.json",
        "summary.train_step_160_channels_last_ms",
        "the same at 160 px, channels-last (default)",
        "ms/image",
    ),
    (
        "train_memory.json",
        "epoch.images_per_s",
        "`ovt.train.loader` stream over webdataset shards, 100k synthetic images (not the trainer's input)",
        "images/s",
    ),
    ("train_memory.json", "rss_growth_per_10k_images_bytes", "that stream's host RSS growth per 10k images", "bytes"),
    (
        "trainer_memory.json",
        "large.runs.ovt.rss_growth_per_10k_images_bytes",
        "the Trainer (train stage, `ovt`, full forward, 2 workers), 100k synthetic MVCap images: host RSS growth "
        "per 10k images over the epoch",
        "bytes",
    ),
    (
        "trainer_memory.json",
        "scaling.ovt.rss_start_bytes_per_row",
        "the Trainer's RSS at its first step, per training row (100k-image run minus 10k-image run)",
        "bytes/row",
    ),
    (
        "trainer_memory.json",
        "scaling.ovt.rss_anon_start_bytes_per_row",
        "the same for its private (anonymous) memory, without the file-backed pages of the mapped table and caption "
        "bank",
        "bytes/row",
    ),
    (
        "trainer_memory.json",
        "scaling.ovt.rss_anon_peak_bytes_per_row",
        "its private memory's peak over the run (mining pass and epoch), per training row",
        "bytes/row",
    ),
    (
        "trainer_memory.json",
        "scaling.table_stage_heap_bytes_per_row",
        "the training table's heap as the stage loads it (built in a child process, columns memory-mapped)",
        "bytes/row",
    ),
    (
        "trainer_memory.json",
        "scaling.table_python_bytes_per_row",
        "the same table built in the training process (its columns on the heap)",
        "bytes/row",
    ),
    (
        "trainer_memory.json",
        "scaling.ovt.workers_uss_peak_bytes_per_row",
        "its DataLoader workers' private memory (USS, both workers), peak, per training row (the same difference)",
        "bytes/row",
    ),
    ("acquire_face_precheck.json", "obj.precheck_s", "reject a 2M-face OBJ from its first pass", "s"),
    ("acquire_face_precheck.json", "obj.full_load_s", "the same OBJ, full parse (what the first pass saves)", "s"),
    ("services_startup.json", "summary.s3.cold_s", "S3 (SeaweedFS) cold start", "s"),
    ("services_startup.json", "summary.mlflow.cold_s", "MLflow server cold start", "s"),
    ("services_startup.json", "summary.prefect.cold_s", "Prefect server cold start", "s"),
    ("registry_roundtrip.json", "register_s", "register one model version (MLflow)", "s"),
    ("cli_startup.json", "commands.help.median_s", "`ovt --help`, wall (see the file for the load average)", "s"),
    ("cli_startup.json", "commands.help.median_cpu_s", "`ovt --help`, CPU", "s"),
    ("cli_startup.json", "commands.params.median_s", "`ovt params`, wall", "s"),
    ("cli_startup.json", "commands.params.median_cpu_s", "`ovt params`, CPU", "s"),
)

_SECTION = re.compile(r"(<!-- ovt-report:(?P<name>[a-z]+) -->\n)(?P<body>.*?)(<!-- /ovt-report:(?P=name) -->)", re.S)


class ReportError(ValueError):
    """A source file is unreadable or lacks a key the report needs (the message names the file and key)."""


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: not valid JSON ({err})") from err


def _get(doc: Any, dotted: str, source: str) -> Any:
    cur = doc
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            raise ReportError(f"{source}: no key `{dotted}` (renamed? update the table in ovt/report.py)")
        cur = cur[part]
    return cur


def _num(v: Any, digits: int = 1, scale: float = 1.0, sign: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    x = float(v) * scale
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def render_results(root: Path) -> str:
    path = root / METRICS_FILE
    if not path.is_file():
        return (
            f"No results committed yet: `{METRICS_FILE}` is written by the evaluate stage (`ovt run`), "
            f"committed, then rendered here by `ovt report`.\n"
        )
    doc = _load(path)
    for _, key in RESULT_COLUMNS:  # a renamed metric fails here, named, rather than leaving an empty column
        if not any(isinstance(doc.get(g), Mapping) and key in doc[g] for g, _ in RESULT_ROWS):
            raise ReportError(
                f"{path}: no group has the metric `{key}` (renamed? update RESULT_COLUMNS in ovt/report.py)"
            )
    counts = {k: doc.get(k) for k in RESULT_COUNTS}
    lines = [
        f"From `{METRICS_FILE}` ({', '.join(f'{k} = {v}' for k, v in counts.items() if v is not None)}): "
        "accuracy in %, differences in percentage points, [95 % paired-bootstrap interval over held-out "
        "objects].",
        "",
        "| model | " + " | ".join(h for h, _ in RESULT_COLUMNS) + " |",
        "|---|" + "---|" * len(RESULT_COLUMNS),
    ]
    rows = list(RESULT_ROWS)
    pooled = _pooled_seeds(doc)
    if pooled:
        n = pooled
        rows += [
            (f"contrastive_x{n}", f"contrastive LoRA, all views, mean of {n} training seeds"),
            (f"ovt_x{n}", f"OVT, mean of {n} training seeds"),
            (f"ovt_x{n}-contrastive_x{n}", f"Δ OVT − contrastive, mean of {n} training seeds"),
        ]
    for group, label in rows:
        row = doc.get(group)
        if not isinstance(row, Mapping):
            continue
        diff = "-" in group
        cells = []
        for _, key in RESULT_COLUMNS:
            if key not in row:
                cells.append("–")
                continue
            cell = _num(row[key], scale=100, sign=diff)
            if f"{key}_lo" in row and f"{key}_hi" in row:
                lo, hi = (_num(row[f"{key}_{end}"], scale=100, sign=diff) for end in ("lo", "hi"))
                cell += f" [{lo}, {hi}]"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if pooled:
        lines += ["", _seed_spread(doc, pooled)]
    return "\n".join(lines) + "\n"


def _pooled_seeds(doc: Mapping) -> int | None:
    """n when metrics.json holds the seed-pooled comparison `ovt_x<n>-contrastive_x<n>`, else None."""
    for key in doc:
        m = re.fullmatch(r"ovt_x(\d+)-contrastive_x\1", str(key))
        if m:
            return int(m.group(1))
    return None


def _seed_spread(doc: Mapping, n: int) -> str:
    """One line per metric: OVT − contrastive for each training seed alone (the spread the pooled row averages)."""
    parts = []
    for header, key in (("worst-view", "worst_view_acc"), ("off-canonical", "off_canonical_acc")):
        diffs = []
        for k in range(n):
            o, c = replicate_name("ovt", k), replicate_name("contrastive", k)
            a, b = (doc.get(g, {}).get(key) if isinstance(doc.get(g), Mapping) else None for g in (o, c))
            diffs.append(
                _num(a - b, scale=100, sign=True)
                if isinstance(a, (int, float)) and isinstance(b, (int, float))
                else "–"
            )
        parts.append(f"{header} {', '.join(diffs)}")
    return f"Δ OVT − contrastive per training seed (first: the registered models), in pp: {'; '.join(parts)}."


def _machine(doc: Mapping) -> str:
    m = doc.get("machine") or {}
    parts = [
        f"{m['cpus']} cores" if "cpus" in m else "",
        f"load average {m['load_avg_1m']:.2f} before the run" if isinstance(m.get("load_avg_1m"), (int, float)) else "",
        str(doc.get("date", "")),
    ]
    return ", ".join(p for p in parts if p)


def render_pipeline(root: Path) -> str:
    path = root / PIPELINE_FILE
    if not path.is_file():
        return (
            f"Not measured yet: `benchmarks/pipeline.py` runs the default pipeline from an empty workspace "
            f"and writes `{PIPELINE_FILE}`; `ovt report` renders it here.\n"
        )
    doc = _load(path)
    stages = _get(doc, "stages", str(path))
    lines = [
        f"From `{PIPELINE_FILE}` ({_machine(doc)}): `ovt run` from an empty workspace, services start included.",
        "",
        "| stage | wall s | CPU s |",
        "|---|---|---|",
    ]
    for s in stages:
        lines.append(f"| {s['stage']} | {_num(s['seconds'])} | {_num(s.get('cpu_seconds'))} |")
    for key, label in (
        ("push_s", "dvc push"),
        ("register_s", "register + promote"),
        ("total_s", "**whole `ovt run`**"),
        ("noop_rerun_s", "second `ovt run`, nothing changed"),
        ("noop_rerun_dvc_s", "of which DVC status + repro"),
        ("noop_rerun_push_s", "of which `dvc push`"),
    ):
        if key in doc:
            lines.append(f"| {label} | {_num(doc[key])} | |")
    train = root / TRAIN_METRICS_FILE
    if train.is_file():
        # the power protocol's price: the seed replicates' share of the train stage
        walls = _load(train)
        reps = {
            k: v.get("wall_s") for k, v in walls.items() if re.fullmatch(r".+_seed\d+", k) and isinstance(v, Mapping)
        }
        spent = [w for w in reps.values() if isinstance(w, (int, float))]
        if spent:
            lines += [
                "",
                f"Of the train stage, {_num(sum(spent))} s trained the {len(spent)} seed replicates of the power "
                f"protocol (`{TRAIN_METRICS_FILE}`, `wall_s`).",
            ]
    return "\n".join(lines) + "\n"


def render_benchmarks(root: Path) -> str:
    lines = ["| measurement | value | source |", "|---|---|---|"]
    docs: dict[str, Any] = {}
    for fname, key, what, unit in BENCHMARKS:
        path = root / "benchmarks" / "results" / fname
        if not path.is_file():
            lines.append(f"| {what} | not measured yet | `benchmarks/results/{fname}` |")
            continue
        doc = docs.setdefault(fname, _load(path))
        value = _get(doc, key, f"benchmarks/results/{fname}")
        if unit == "share":  # a fraction in the file, a percentage in the table
            value, unit = 100 * value, "%"
        digits = 3 if unit == "s" and isinstance(value, (int, float)) and abs(value) < 1 else 1
        lines.append(f"| {what} | {_num(value, digits)} {unit} | `{fname}` `{key}` |")
    return "\n".join(lines) + "\n"


RENDERERS: dict[str, Callable[[Path], str]] = {
    "results": render_results,
    "pipeline": render_pipeline,
    "benchmarks": render_benchmarks,
}
# docs/experiments.md section -> the sweep spec whose results (the spec's path with .json) it renders
SWEEPS: dict[str, str] = {
    "sweep": "experiments/validation_sweep.yaml",
    "loss": "experiments/loss_sweep.yaml",
    "budget": "experiments/budget_sweep.yaml",
    "lr": "experiments/lr_sweep.yaml",
    "placement": "experiments/placement_sweep.yaml",
}


def sweep_renderer(spec: str) -> Callable[[Path], str]:
    results = str(Path(spec).with_suffix(".json"))

    def render(root: Path) -> str:
        from ovt.sweep import render_table

        path = root / results
        if not path.is_file():
            return f"Not run yet: `ovt sweep {spec}` writes `{results}`.\n"
        return render_table(_load(path), results)

    return render


# Generated documents besides README.md (`ovt report` renders README with RENDERERS, then these).
DOCUMENTS: dict[str, dict[str, Callable[[Path], str]]] = {
    "docs/experiments.md": {name: sweep_renderer(spec) for name, spec in SWEEPS.items()}
}


def render_text(
    text: str, root: Path, renderers: Mapping[str, Callable[[Path], str]] = RENDERERS
) -> tuple[str, list[str]]:
    """`text` with every generated section re-rendered, and the names of the sections that changed."""
    changed: list[str] = []
    seen: set[str] = set()

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in renderers:
            raise ReportError(f"unknown generated section `{name}` (known: {', '.join(renderers)})")
        seen.add(name)
        body = renderers[name](root)
        if body != m.group("body"):
            changed.append(name)
        return m.group(1) + body + m.group(4)

    out = _SECTION.sub(sub, text)
    missing = set(renderers) - seen
    if missing:
        raise ReportError(
            f"README has no generated section(s) {sorted(missing)}: add "
            + ", ".join(f"`<!-- ovt-report:{n} -->` … `<!-- /ovt-report:{n} -->`" for n in missing)
        )
    return out, changed


def render_readme(
    readme: Path, *, root: Path, check: bool = False, renderers: Mapping[str, Callable[[Path], str]] = RENDERERS
) -> list[str]:
    """Re-render README's generated sections (in place unless `check`); return the names that differed."""
    from ovt.io import atomic_write_text

    text = readme.read_text(encoding="utf-8")
    out, changed = render_text(text, root, renderers)
    if changed and not check:
        atomic_write_text(readme, out)
    return changed
