"""The ``medguide`` command: the README's main job (one epoch here) and the synthetic writer."""

from __future__ import annotations

import csv

from medguide.cli.main import main
from medguide.data import brats_datalist


def test_demo_writes_a_report_with_table_and_figure(tmp_path):
    main(["demo", "maml_brats_mri_segmentation", "--output_dir", str(tmp_path), "--max_epochs", "1"])
    report = (tmp_path / "report.md").read_text()
    assert "| t1+t1ce+t2+flair |" in report and "![first validation case](figure.png)" in report
    assert (tmp_path / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "eval" / "missing_modality_table.csv") as f:
        assert len(list(csv.DictReader(f))) == 15


def test_synthetic_writes_a_readable_brats_layout(tmp_path, capsys):
    main(["synthetic", "brats", str(tmp_path / "brats"), "--num_cases", "2", "--shape", "24", "24", "24"])
    assert capsys.readouterr().out.strip().endswith("brats")
    cases = brats_datalist(tmp_path / "brats")
    assert len(cases) == 2 and all(len(c["image"]) == 4 for c in cases)
