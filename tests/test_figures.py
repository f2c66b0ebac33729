"""Figures, LaTeX tables and their rules, drawn from small hand-made study tables."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import matplotlib.colors as mcolors
import matplotlib.image as mpimg
import pandas as pd
import pytest
import study_tables
from conftest import copy_workflow, run_snakemake

from llenergymeasure import analysis, figures, findings, outputs, tables

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "config" / "models"


def _study(platforms: tuple[str, ...], use_estimated_energy: bool = False, **kwargs) -> dict:
    trials, summary = study_tables.tables(platforms, **kwargs)
    architectures = {p.stem: json.loads(p.read_text()) for p in (MODELS / "tiny-llama.json", MODELS / "tiny-gpt2.json")}
    config = study_tables.CONFIG_ANALYSIS | {"use_estimated_energy": use_estimated_energy}
    results = analysis.run_all(trials, summary, config, architectures=architectures, families=study_tables.FAMILIES)
    return {"measurements": trials, "summary": summary, **results, "use_estimated_energy": use_estimated_energy}


@pytest.fixture(scope="module")
def one_platform() -> dict:
    return _study(("cpu-test",), batch_sizes=(1, 4, 64), failed_batch=64)


@pytest.fixture(scope="module")
def two_platforms() -> dict:
    return _study(("cpu-test", "gpu-test"))


@pytest.fixture(scope="module")
def two_platforms_with_estimates() -> dict:
    return _study(("cpu-test", "gpu-test"), use_estimated_energy=True)


def test_every_figure_has_a_caption_file_and_every_output_a_path():
    for name, (function, caption) in figures.FIGURES.items():
        assert callable(function)
        assert (REPO / "workflow" / "report" / f"{name}.rst").read_text().strip() == caption
        assert len(caption) > 40
    paths = figures.figure_paths("out")
    assert {f"{n}_pdf" for n in figures.FIGURES} | {f"{n}_png" for n in figures.FIGURES} | {
        f"table_{n}" for n in tables.TABLES
    } | {"findings_md"} == set(paths)
    assert paths["pareto_png"] == "out/figures/pareto.png"
    assert all(p.startswith("results/") for p in figures.all_figure_outputs())


def test_every_figure_renders_from_one_platform_as_pdf_and_png(one_platform, tmp_path):
    written = figures.render_all(one_platform, tmp_path)
    assert len(written) == 2 * len(figures.FIGURES)
    for path in written:
        assert path.stat().st_size > 2000, path
    for name in figures.FIGURES:
        assert (tmp_path / f"{name}.pdf").read_bytes().startswith(b"%PDF")
        _, width, _ = mpimg.imread(tmp_path / f"{name}.png").shape
        # at most a page width (6.9 in) at 300 dpi, and legible: at least a column (3.3 in)
        assert 3.3 * 300 * 0.95 <= width <= 6.9 * 300 * 1.3, (name, width)


def _marker_faces(fig) -> dict[str, set[bool]]:
    """Panel title -> set of 'marker is filled' over its lines."""
    faces: dict[str, set[bool]] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_marker() not in (None, "None", "", "_", "|"):  # caps are "_"
                faces.setdefault(ax.get_title(), set()).add(line.get_markerfacecolor() != "none")
    return faces


def _texts(fig) -> str:
    return " ".join(t.get_text().replace("\n", " ") for ax in fig.axes for t in ax.texts)


@pytest.mark.parametrize("name", ["energy_vs_batch", "quantisation_energy", "energy_phase_shares", "pareto"])
def test_a_platform_without_sensor_energy_says_so_instead_of_a_proxy(two_platforms, name):
    with figures.plt.rc_context(figures.STYLE):
        fig = figures.FIGURES[name][0](two_platforms)
    titles, texts = [ax.get_title() for ax in fig.axes], _texts(fig)
    figures.plt.close(fig)
    assert not any("cpu-test" in title for title in titles), titles  # nothing drawn for it
    assert any("gpu-test" in title for title in titles)
    assert "cpu-test: no sensor energy (source: estimate-cpu-tdp)" in texts
    assert "gpu-test: no sensor" not in texts


def test_estimated_energy_is_drawn_with_open_markers_and_measured_with_filled(two_platforms_with_estimates):
    with figures.plt.rc_context(figures.STYLE):
        fig = figures.energy_vs_batch(two_platforms_with_estimates)
    faces = _marker_faces(fig)
    footnote = fig._supxlabel.get_text()
    figures.plt.close(fig)
    assert faces["tiny-llama · cpu-test"] == {False}  # CPU-TDP estimate
    assert faces["tiny-llama · gpu-test"] == {True}  # Zeus/NVML measurement
    assert "estimate-cpu-tdp" in footnote


def test_random_weight_models_are_greyed_in_the_pareto_figure(two_platforms_with_estimates):
    data = dict(two_platforms_with_estimates)
    summary = data["summary"].copy()
    summary.loc[summary["model"] == "tiny-gpt2", "weights"] = "trained"
    data["pareto"] = analysis.pareto_frontiers(summary)
    fig = figures.pareto(data)
    grey = mcolors.to_rgba(figures.GREY)
    colours = {}
    for ax in fig.axes:
        for collection in ax.collections:
            label = collection.get_label()
            if label.startswith("tiny-"):
                colours.setdefault(label, set()).add(tuple(collection.get_edgecolor()[0]))
    figures.plt.close(fig)
    assert colours["tiny-llama (random weights)"] == {grey}
    assert grey not in colours["tiny-gpt2"]


def test_transfer_figures_say_why_they_are_empty_with_one_platform(one_platform):
    fig = figures.ranking_transfer(one_platform)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    figures.plt.close(fig)
    assert any("One platform in this study (cpu-test)" in t for t in texts)


def test_transfer_figure_draws_each_pair_from_two_platforms(two_platforms):
    fig = figures.ranking_transfer(two_platforms)
    titles = [ax.get_title() for ax in fig.axes]
    figures.plt.close(fig)
    assert titles == ["cpu-test → gpu-test (up to 6 common configurations per workload)"]


# LaTeX tables ------------------------------------------------------------------------------


def test_escape_and_number_formatting():
    assert tables.escape("gguf-q8_0 50% & {x}") == r"gguf-q8\_0 50\% \& \{x\}"
    assert tables.escape(tables.ESTIMATE_MARK) == r"\textsuperscript{\dag}"
    assert tables.number(1234.5678) == "1.23e+03"
    assert tables.number(0.012345, 2) == "0.012"
    assert tables.number(None) == tables.number(float("nan")) == "--"
    assert tables.with_interval(2.0, 1.5, 2.5) == "2 [1.5, 2.5]"
    assert tables.with_interval(2.0, float("nan"), float("nan")) == "2"


def _body_rows(tex: str) -> list[str]:
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    return [line for line in body.strip().splitlines() if line.strip()]


def test_every_table_is_booktabs_with_one_row_per_entry(two_platforms, tmp_path):
    written = tables.write_all(two_platforms, tmp_path)
    assert {p.stem for p in written} == set(tables.TABLES)
    for path in written:
        tex = path.read_text()
        for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\caption{", rf"\label{{tab:{path.stem}}}"):
            assert tex.count(rule) == 1, (path.stem, rule)
        assert tex.count("{") == tex.count("}") + tex.count(r"\{") - tex.count(r"\}"), path.stem
        columns = re.search(r"\\begin\{tabular\}\{([lr]+)\}", tex).group(1)
        for row in _body_rows(tex):
            assert row.endswith(r"\\")
            assert len(re.split(r"(?<!\\)&", row)) == len(columns), (path.stem, row)
    summary_rows = _body_rows((tmp_path / "summary.tex").read_text())
    assert len(summary_rows) == len(two_platforms["summary"])
    # estimated energy carries the mark, measured energy does not
    assert all(r"\dag" in row for row in summary_rows if row.startswith("cpu-test"))
    assert not any(r"\dag" in row for row in summary_rows if row.startswith("gpu-test"))


def test_transfer_tables_say_why_they_are_empty_with_one_platform(one_platform, tmp_path):
    tables.write("ranking_transfer", one_platform, tmp_path / "t.tex")
    rows = _body_rows((tmp_path / "t.tex").read_text())
    assert rows == [r"One platform in this study (cpu-test): no transfer to measure. \\"]


# Rules -------------------------------------------------------------------------------------


def test_rule_files_are_snakefmt_clean():
    snakefmt = Path(sys.executable).with_name("snakefmt")
    result = subprocess.run(
        [str(snakefmt), "--check", "workflow/rules/analyse.smk", "workflow/rules/figures.smk"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def _jobs(output: str, rule: str) -> list[dict[str, str]]:
    """The jobs of `rule` snakemake printed: their input and wildcards lines."""
    jobs = []
    for block in re.split(r"\n(?=\[|rule |localrule )", output):
        if re.match(rf"(local)?rule {rule}:", block.strip()):
            fields = dict(re.findall(r"^\s+(input|wildcards): (.*)$", block, flags=re.MULTILINE))
            jobs.append(fields)
    return jobs


def test_paper_figures_rebuilds_everything_from_shipped_tables_alone(tmp_path, one_platform):
    """A fresh copy whose paper/data holds only the two tables: paper_figures plans only the
    analysis, figure and table rules (one job per figure, reading only its analyses), leaves
    every figure, table and analysis, and gives the tables the library gives in process."""
    from llenergymeasure.config import load_config

    workflow = copy_workflow(tmp_path / "repo")
    data = workflow / "paper" / "data"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    one_platform["measurements"].to_parquet(data / "measurements.parquet")
    one_platform["summary"].to_parquet(data / "summary.parquet")
    result = run_snakemake(workflow, "--cores", "1", "paper_figures", timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    job_stats = output.split("Job stats:")[1].split("\n\n")[0]
    planned = dict(re.findall(r"^(\w+)\s+(\d+)$", job_stats, flags=re.MULTILINE))
    n_figures = str(len(outputs.FIGURES))
    assert planned == {
        "analyse": "1",
        "figure": n_figures,
        "latex_tables": "1",
        "paper_figures": "1",
        "total": str(len(outputs.FIGURES) + 3),
    }, planned
    figure_jobs = _jobs(output, "figure")
    assert len(figure_jobs) == len(outputs.FIGURES)
    for job in figure_jobs:
        name = re.search(r"figure=(\w+)", job["wildcards"]).group(1)
        expected = {"paper/data/measurements.parquet", "paper/data/summary.parquet"} | {
            f"results/paper_figures/analysis/{a}.parquet" for a in outputs.FIGURES[name].reads
        }
        assert set(job["input"].split(", ")) == expected, name
    out = workflow / "results" / "paper_figures"
    for path in figures.figure_paths(str(out)).values():
        assert Path(path).stat().st_size > 0, path
    for name in analysis.ANALYSES:
        assert (out / "analysis" / f"{name}.parquet").is_file(), name

    # value for value what the library computes in process from the same tables and settings
    config = load_config(workflow / "config" / "config.yaml")
    expected = tmp_path / "expected"
    analysis.analyse_files(
        data / "measurements.parquet",
        data / "summary.parquet",
        analysis.analysis_paths(str(expected / "analysis")),
        config["analysis"],
        sorted((workflow / "config" / "models").glob("*.json")),
        analysis.families_from_config(config["models"], workflow),
        config["workload"]["new_tokens"],
    )
    for name in analysis.ANALYSES:
        pd.testing.assert_frame_equal(
            pd.read_parquet(out / "analysis" / f"{name}.parquet"),
            pd.read_parquet(expected / "analysis" / f"{name}.parquet"),
            obj=name,
        )
    study = figures.load_study(
        data / "measurements.parquet",
        data / "summary.parquet",
        analysis.analysis_paths(str(expected / "analysis")),
        use_estimated_energy=config["analysis"]["use_estimated_energy"],
    )
    tables.write_all(study, expected / "tables")
    findings.write_markdown(study, expected / "tables" / "findings.md")
    for path in sorted((expected / "tables").iterdir()):
        assert (out / "tables" / path.name).read_text() == path.read_text(), path.name


def test_each_figure_and_table_reads_only_what_the_registry_says(two_platforms, one_platform, tmp_path):
    """Drawn from a mapping that records every key asked for, each figure asks for exactly
    the analyses `outputs.FIGURES` gives it (those are its rule's only inputs), and the
    tables for no analysis outside `outputs.TABLES`."""

    class Recording(Mapping):
        def __init__(self, data, allowed):
            self.data, self.allowed, self.asked = data, set(allowed), set()

        def __getitem__(self, key):
            self.asked.add(key)
            if key not in self.allowed:
                raise KeyError(key)
            return self.data[key]

        def __iter__(self):
            return iter(k for k in self.data if k in self.allowed)

        def __len__(self):
            return len(self.allowed)

    base = {"measurements", "summary", "use_estimated_energy"}
    for name, spec in outputs.FIGURES.items():
        asked = set()
        for study in (two_platforms, one_platform):
            recording = Recording(study, base | set(spec.reads))
            with figures.plt.rc_context(figures.STYLE):
                figures.plt.close(figures.FIGURES[name][0](recording))
            asked |= recording.asked
        assert asked - base == set(spec.reads), name
    for name, reads in outputs.TABLES.items():
        recording = Recording(two_platforms, base | set(reads))
        tables.TABLES[name][0](recording)
        assert recording.asked - base == set(reads), name
    recording = Recording(two_platforms, base | {"findings"})
    findings.write_markdown(recording, tmp_path / "findings.md")
    assert recording.asked - base == {"findings"}


# paper/refresh.py ------------------------------------------------------------------------------


def _refresh_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("paper_refresh", REPO / "paper" / "refresh.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_refresh_ships_the_aggregate_with_a_manifest(tmp_path, one_platform):
    from llenergymeasure.config import load_config, measurement_settings
    from llenergymeasure.environment import config_hash

    refresh = _refresh_module()
    config_path = REPO / "config" / "config.yaml"
    # rows carry the hash of the measurement settings they depend on
    study_hash = config_hash(measurement_settings(load_config(config_path), "pytorch"))
    results, dest = tmp_path / "results", tmp_path / "paper" / "data"
    (results / "aggregate").mkdir(parents=True)
    trials = one_platform["measurements"].assign(config_hash=study_hash, git_commit="abc123")
    trials.to_parquet(results / "aggregate" / "measurements.parquet")
    one_platform["summary"].to_parquet(results / "aggregate" / "summary.parquet")
    (results / "analysis").mkdir()
    one_platform["compound"].to_parquet(results / "analysis" / "compound.parquet")
    env_dir = results / "measure" / "tiny-llama" / "none-float32"
    env_dir.mkdir(parents=True)
    for backend, torch_version in (("pytorch", "2.13.0"), ("other", "2.12.0")):
        (env_dir / f"{backend}.env.json").write_text(
            json.dumps(
                {
                    "platform_id": "cpu-test",
                    "device": "cpu",
                    "device_name": "Test CPU",
                    "driver": None,
                    "libraries": {"torch": torch_version},
                    "python": "3.11.9",
                }
            )
        )

    assert refresh.main(["--results", str(results), "--dest", str(dest), "--config", str(config_path)]) == 0
    for name in ("measurements.parquet", "summary.parquet", "analysis/compound.parquet"):
        assert (dest / name).read_bytes() == (
            (results / "aggregate" / name) if "/" not in name else (results / name)
        ).read_bytes()
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["config_hashes"] == [study_hash] and manifest["config_matches_rows"]
    assert manifest["commits"] == ["abc123"]
    assert manifest["analysis"] == load_config(config_path)["analysis"]
    platform = manifest["platforms"]["cpu-test"]
    assert platform["devices"] == ["Test CPU"] and platform["energy_sources"] == ["estimate-cpu-tdp"]
    assert platform["failed_trials"] == int((trials["status"] == "failed").sum()) > 0
    environment = platform["environment"]
    assert environment["python"] == "3.11.9" and environment["measure_jobs"] == 2
    assert environment["libraries"] == [{"torch": "2.12.0"}, {"torch": "2.13.0"}]  # they differ: both kept
    assert manifest["files"]["summary.parquet"]["sha256"] == refresh.sha256(dest / "summary.parquet")
    # paper_figures reads the shipped analysis section
    assert analysis.shipped_analysis_config(dest / "manifest.json", {"x": 1}) == manifest["analysis"]


def test_refresh_without_results_says_what_to_run(tmp_path, capsys):
    refresh = _refresh_module()
    assert refresh.main(["--results", str(tmp_path), "--dest", str(tmp_path / "out")]) == 2
    assert "run the pipeline" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
