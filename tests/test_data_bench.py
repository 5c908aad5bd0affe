"""``course bench data`` runs end to end on a tiny setting and prints both figures and the
ratio (the speed itself is measured by running the benchmark, not asserted here)."""
from __future__ import annotations

import re

import pytest

from course_utils.bench import data as bench_data
from course_utils.data import fashion_mnist as fm


@pytest.mark.skipif(not fm.SYSTEM_DIR.is_dir(), reason="Debian dataset-fashion-mnist not installed")
def test_bench_data_prints_both_rates_and_ratio(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    assert bench_data.main(["--sizes", "12", "--seconds", "0.2", "--batch-size", "16"]) == 0
    out = capsys.readouterr().out
    ref = re.search(r"torchvision FashionMNIST \+ DataLoader:\s+([\d.]+) batches/s", out)
    fast = re.search(r"FastLoader \(cpu\):\s+([\d.]+) batches/s", out)
    assert ref and fast and float(ref.group(1)) > 0 and float(fast.group(1)) > 0
    assert re.search(r"ratio: [\d.]+x", out) and "(16, 3, 12, 12)" in out
