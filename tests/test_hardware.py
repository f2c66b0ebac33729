"""config/hardware.yaml and the MFU/MBU helpers: exact device matching, no guessed peaks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "workflow" / "scripts") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "workflow" / "scripts"))

from llenergymeasure import hardware  # noqa: E402

REQUIRED_DEVICES = {
    "NVIDIA H100 80GB HBM3": "H100 SXM5 80GB",
    "NVIDIA H100 PCIe": "H100 PCIe 80GB",
    "NVIDIA H200": "H200 SXM 141GB",
    "NVIDIA A100-SXM4-80GB": "A100 SXM4 80GB",
    "NVIDIA A100-SXM4-40GB": "A100 SXM4 40GB",
    "NVIDIA L40S": "L40S",
    "NVIDIA GeForce RTX 4090": "GeForce RTX 4090",
}


def test_default_table_is_found_relative_to_the_package() -> None:
    assert hardware.DEFAULT_TABLE == REPO_ROOT / "config" / "hardware.yaml"
    table = hardware.load_table()
    assert len(table) >= len(REQUIRED_DEVICES)
    for entry in table:
        assert entry["source"]["url"].startswith("https://") and entry["source"]["document"]
        for dtype in ("float32", "float16", "bfloat16"):
            assert entry["peak_flops_per_s"][dtype] > 1e12
        assert entry["memory_bandwidth_bytes_per_s"] > 1e11
        # dense tensor-core half precision is faster than FP32 on CUDA cores on every listed part
        assert entry["peak_flops_per_s"]["bfloat16"] > entry["peak_flops_per_s"]["float32"]


@pytest.mark.parametrize("nvml_name, entry_name", sorted(REQUIRED_DEVICES.items()))
def test_nvml_names_select_their_row(nvml_name: str, entry_name: str) -> None:
    assert hardware.lookup(nvml_name)["name"] == entry_name
    assert hardware.lookup(f"  {nvml_name.lower()} ")["name"] == entry_name


@pytest.mark.parametrize(
    "name",
    [
        "NVIDIA H100 NVL",
        "NVIDIA H200 NVL",
        "NVIDIA H100",
        "H100",
        "NVIDIA A100",
        "Tesla V100-SXM2-16GB",
        "cpu",
        "",
        None,
    ],
)
def test_unknown_or_ambiguous_devices_get_none(name) -> None:
    assert hardware.lookup(name) is None
    assert hardware.mfu(1e12, 1.0, name, "bfloat16") is None
    assert hardware.mbu(1e9, 1.0, name) is None


def test_mfu_and_mbu_arithmetic() -> None:
    h100 = hardware.lookup("NVIDIA H100 80GB HBM3")
    peak = h100["peak_flops_per_s"]["bfloat16"]
    assert hardware.mfu(peak * 0.5, 2.0, "NVIDIA H100 80GB HBM3", "bfloat16") == pytest.approx(0.25)
    assert hardware.mfu(peak, 1.0, "NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(1.0)
    bandwidth = h100["memory_bandwidth_bytes_per_s"]
    assert hardware.mbu(bandwidth * 0.3, 1.0, "NVIDIA H100 80GB HBM3") == pytest.approx(0.3)
    # nothing is guessed: an unlisted dtype, zero or missing time, or no work give None
    assert hardware.mfu(1e12, 1.0, "NVIDIA A100-SXM4-80GB", "float8") is None
    assert hardware.mfu(1e12, 0.0, "NVIDIA H100 80GB HBM3", "bfloat16") is None
    assert hardware.mfu(1e12, float("nan"), "NVIDIA H100 80GB HBM3", "bfloat16") is None
    assert hardware.mbu(1e9, None, "NVIDIA H100 80GB HBM3") is None


def test_override_path_and_validation(tmp_path) -> None:
    good = tmp_path / "hw.yaml"
    good.write_text(
        "devices:\n"
        "  - name: Test GPU\n"
        "    nvml_names: ['Test GPU 1']\n"
        "    peak_tflops: {float32: 10, bfloat16: 100}\n"
        "    memory_bandwidth_gb_s: 500\n"
        "    source: {document: test sheet, url: 'https://example.org/sheet'}\n"
    )
    assert hardware.lookup("Test GPU 1", path=good)["name"] == "Test GPU"
    assert hardware.mfu(50e12, 1.0, "Test GPU 1", "bfloat16", path=good) == pytest.approx(0.5)
    assert hardware.lookup("Test GPU 1") is None  # the default table is untouched

    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("memory_bandwidth_gb_s: 500", "memory_bandwidth_gb_s: -1"))
    with pytest.raises(hardware.HardwareTableError, match=r"devices\[0\] \(Test GPU\)\.memory_bandwidth_gb_s"):
        hardware.load_table(bad)
    nosource = tmp_path / "nosource.yaml"
    nosource.write_text(good.read_text().replace("url: 'https://example.org/sheet'", "url: ''"))
    with pytest.raises(hardware.HardwareTableError, match="source"):
        hardware.load_table(nosource)
    with pytest.raises(hardware.HardwareTableError, match="not found"):
        hardware.load_table(tmp_path / "missing.yaml")
