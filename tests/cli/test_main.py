"""The ``medguide`` command: the README's main job (one epoch here), predictions with its output, the listing."""

from __future__ import annotations

import csv
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from medguide.cli.main import main
from medguide.data import brats_datalist, make_brats_dataset
from tests.bundles.helpers import bundle, bundle_fails, configs, overrides

CONFIGS = configs("maml_brats_mri_segmentation")
REAL_2023 = "brats2023-gli-4seq-brainles"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's output folder after one epoch: models, tables, report, predictions on the real sample case."""
    out = tmp_path_factory.mktemp("demo")
    main(["demo", "maml_brats_mri_segmentation", "--output_dir", str(out), "--max_epochs", "1"])
    return out


def _assert_prediction_fits(prediction, reference, labels) -> None:
    predicted, reference = nib.load(prediction), nib.load(reference)
    assert predicted.shape == reference.shape
    np.testing.assert_allclose(predicted.affine, reference.affine, atol=1e-4)
    assert set(np.unique(np.asarray(predicted.dataobj)).tolist()) <= set(labels)


def test_demo_writes_a_report_with_table_and_figure(demo):
    report = (demo / "report.md").read_text(encoding="utf-8")
    assert "| t1+t1ce+t2+flair |" in report and "(figure.png)" in report
    assert (demo / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(demo / "eval" / "missing_modality_table.csv", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == 15


def test_demo_predicts_the_real_sample_case_and_says_how(demo, sample_data):
    if not (sample_data / REAL_2023).is_dir():
        pytest.skip(f"{REAL_2023} is not in the sample data")
    (case,) = brats_datalist(sample_data / REAL_2023, require_label=False)
    # 2023 names in, 2023 labels out (ET = 3)
    _assert_prediction_fits(demo / "predictions" / f"{case['case']}_seg.nii.gz", case["image"][0], {0, 1, 2, 3})
    report = (demo / "report.md").read_text(encoding="utf-8")
    assert f"--bundle_root {demo}" in report and "inference.json" in report and str(demo / "predictions") in report


def test_the_documented_inference_command_takes_the_demo_folder_as_it_is(demo, sample_data, tmp_path):
    """No cpu_scale.json, no network overrides: the folder says how its network was built.

    One window over the cropped brain, as the docs advise on a CPU (48^3 windows take minutes a case).
    """
    source = sample_data / "brats2015-deepmedic"
    if not source.is_dir():
        pytest.skip(f"{source} is not in the sample data")
    out = tmp_path / "out"
    values = {
        "bundle_root": str(demo),
        "dataset_dir": str(source),
        "output_dir": str(out),
        "patch_size": [160, 192, 160],
    }
    bundle("run", "--config_file", str(CONFIGS / "inference.json"), *overrides(values))
    cases = brats_datalist(source, require_label=False, require_all=False)
    assert len(cases) == 2 and all(c["modalities"] == ["t1ce", "flair"] for c in cases)
    for case in cases:
        _assert_prediction_fits(out / f"{case['case']}_seg.nii.gz", case["image"][0], {0, 1, 2, 4})


def test_medguide_predict_runs_a_trained_folder_on_your_cases(demo, tmp_path, capsys):
    data = make_brats_dataset(tmp_path / "mine", num_cases=2, shape=(40, 40, 40), naming="2023", seed=5)
    main(["predict", str(demo), str(data), str(tmp_path / "out"), "--skip_invalid", "True"])
    assert "python -m monai.bundle run --config_file" in capsys.readouterr().out
    for case in brats_datalist(data):
        _assert_prediction_fits(tmp_path / "out" / f"{case['case']}_seg.nii.gz", case["image"][0], {0, 1, 2, 3})
    with pytest.raises(SystemExit, match="holds no trained bundle"):
        main(["predict", str(tmp_path), str(data), str(tmp_path / "out2")])


def test_a_checkpoint_that_does_not_fit_is_named_in_one_line(demo, tmp_path):
    values = {"bundle_root": str(demo), "output_dir": str(tmp_path / "out"), "base_width": 16}
    last = bundle_fails("run", "--config_file", str(CONFIGS / "inference.json"), *overrides(values))
    message = last.splitlines()[-1]
    assert "was trained with base_width 8" in message and "this network has base_width 16" in message, last[-2000:]
    assert len(last.splitlines()) < 10 and "missing key" not in last.lower()


def test_a_missing_model_says_what_to_run(tmp_path):
    values = {"bundle_root": str(tmp_path), "output_dir": str(tmp_path / "out")}
    last = bundle_fails("run", "--config_file", str(CONFIGS / "inference.json"), *overrides(values))
    assert f"no trained model at '{tmp_path}/models/model.pt'" in last.splitlines()[-1], last[-2000:]
    assert "medguide demo" in last.splitlines()[-1]


def test_help_and_the_bundle_list_do_not_load_torch(capsys):
    code = (
        "import sys\nfrom medguide.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "main(['demo', '--list'])\nassert 'torch' not in sys.modules and 'monai' not in sys.modules, 'imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "predict" in result.stdout
    for name in ("maml_brats_mri_segmentation", "maml_liver_tumor_ct_segmentation"):
        assert name in result.stdout
    assert result.stdout.count("expected time: about") == 2


def test_synthetic_writes_a_readable_brats_layout(tmp_path, capsys):
    main(["synthetic", "brats", str(tmp_path / "brats"), "--num_cases", "2", "--shape", "24", "24", "24"])
    assert capsys.readouterr().out.strip().endswith("brats")
    cases = brats_datalist(tmp_path / "brats")
    assert len(cases) == 2 and all(len(c["image"]) == 4 for c in cases)
