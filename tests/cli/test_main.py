"""The ``medguide`` command: the README's main job (one epoch here), predictions with its output, the listing, and
how the command finds bundles from their ``configs/demo.json`` and runs what they declare (fast, with stand-in steps).
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medguide.cli import main as cli
from medguide.cli.main import main
from medguide.data import brats_datalist, make_brats_dataset
from tests.bundles.helpers import REPO, bundle, bundle_fails, configs, overrides

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


@pytest.mark.slow
def test_demo_writes_a_report_with_table_and_figure(demo):
    report = (demo / "report.md").read_text(encoding="utf-8")
    assert "| t1+t1ce+t2+flair |" in report and "(figure.png)" in report
    assert (demo / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(demo / "eval" / "missing_modality_table.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    # 15 subsets, each sequence alone along both routes, and the mean over the 15 subsets per route
    assert len({row["modalities"] for row in rows}) == 16 and len(rows) == 15 + 4 + 2


@pytest.mark.slow
def test_demo_predicts_the_real_sample_case_and_says_how(demo, sample_data):
    if not (sample_data / REAL_2023).is_dir():
        pytest.skip(f"{REAL_2023} is not in the sample data")
    (case,) = brats_datalist(sample_data / REAL_2023, require_label=False)
    # 2023 names in, 2023 labels out (ET = 3)
    _assert_prediction_fits(demo / "predictions" / f"{case['case']}_seg.nii.gz", case["image"][0], {0, 1, 2, 3})
    report = (demo / "report.md").read_text(encoding="utf-8")
    assert f"--bundle_root {demo}" in report and "inference.json" in report and str(demo / "predictions") in report


@pytest.mark.slow
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


@pytest.mark.slow
def test_medguide_predict_runs_a_trained_folder_on_your_cases(demo, tmp_path, capsys):
    data = make_brats_dataset(tmp_path / "mine", num_cases=2, shape=(40, 40, 40), naming="2023", seed=5)
    main(["predict", str(demo), str(data), str(tmp_path / "out"), "--skip_invalid", "True"])
    assert "python -m monai.bundle run --config_file" in capsys.readouterr().out
    for case in brats_datalist(data):
        _assert_prediction_fits(tmp_path / "out" / f"{case['case']}_seg.nii.gz", case["image"][0], {0, 1, 2, 3})
    with pytest.raises(SystemExit, match="holds no trained bundle"):
        main(["predict", str(tmp_path), str(data), str(tmp_path / "out2")])


@pytest.mark.slow
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


def _declarations() -> dict[str, dict]:
    """Every bundle's demo declaration, read here straight from the checkout's files."""
    return {
        path.parents[1].name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((REPO / "bundles").glob("*/configs/demo.json"))
    }


def test_help_and_the_bundle_list_do_not_load_torch(capsys):
    code = (
        "import sys\nfrom medguide.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "main(['demo', '--list'])\nassert 'torch' not in sys.modules and 'monai' not in sys.modules, 'imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "predict" in result.stdout
    declared = _declarations()
    assert "maml_brats_mri_segmentation" in declared
    for name, spec in declared.items():
        assert name in result.stdout and spec["expected_time"] in result.stdout
    assert result.stdout.count("expected time: ") == len(declared)


def test_synthetic_writes_a_readable_brats_layout(tmp_path, capsys):
    main(["synthetic", "brats", str(tmp_path / "brats"), "--num_cases", "2", "--shape", "24", "24", "24"])
    assert capsys.readouterr().out.strip().endswith("brats")
    cases = brats_datalist(tmp_path / "brats")
    assert len(cases) == 2 and all(len(c["image"]) == 4 for c in cases)


# stand-in bundles: a declaration, an overlay, and steps that write (or fail to write) the declared outputs


def record_report(bundle, configs, scale, overrides, out, timings, inference=None) -> Path:
    """A report writer with the signature ``medguide demo`` calls: writes down what it was given."""
    report = out / "report.md"
    given = {"bundle": bundle, "configs": str(configs), "scale": [str(f) for f in scale], "overrides": overrides}
    report.write_text(json.dumps({**given, "steps": list(timings), "inference": inference}), encoding="utf-8")
    return report


def record_maker(out_dir, num_cases, seed, shape=None) -> str:
    return f"toy set in {out_dir}: {num_cases} cases, seed {seed}, shape {shape}"


def _declare(root: Path, name: str, **changes) -> Path:
    configs = root / name / "configs"
    configs.mkdir(parents=True)
    (configs / "short.json").write_text("{}", encoding="utf-8")
    spec = {
        "description": f"{name} on toy data",
        "expected_time": "a moment",
        "synthetic": {"kind": "toy", "maker": f"{__name__}.record_maker"},
        "overlays": ["short.json"],
        "report": f"{__name__}.record_report",
        "outputs": {"train": ["models/model.pt"], "evaluate": ["eval/*.csv"]},
        **changes,
    }
    (configs / "demo.json").write_text(json.dumps(spec), encoding="utf-8")
    return configs


def _stand_in_run(config_files, bundle_root, **values) -> None:
    """A step that leaves the declared outputs, except in bundles named ``broken*``."""
    if Path(config_files[0]).parents[1].name.startswith("broken"):
        return
    output = "eval/table.csv" if any(Path(f).name == "evaluate.json" for f in config_files) else "models/model.pt"
    (Path(bundle_root) / output).parent.mkdir(parents=True, exist_ok=True)
    (Path(bundle_root) / output).write_text("", encoding="utf-8")


@pytest.fixture
def stand_ins(tmp_path, monkeypatch) -> Path:
    """A bundles folder in place of ``medguide.bundles`` holding bundle ``toy``; :func:`_stand_in_run` runs steps."""
    root = tmp_path / "bundles"
    _declare(root, "toy")
    monkeypatch.setattr(cli, "bundles_root", lambda: root)
    monkeypatch.setattr(cli, "run_bundle", _stand_in_run)
    return root


def test_the_installed_bundles_are_the_checkouts_each_with_a_maker_and_a_report_writer():
    """An editable install maps ``medguide.bundles`` onto the checkout, so edits to its configs take effect."""
    assert cli.bundles_root() == REPO / "bundles"
    specs = cli.bundle_specs()
    assert {"maml_brats_mri_segmentation", "maml_liver_tumor_ct_segmentation"} <= set(specs)
    assert set(specs) == {p.parents[1].name for p in REPO.glob("bundles/*/configs/demo.json")}
    for name, spec in specs.items():
        assert callable(cli.declared(name, spec["synthetic"]["maker"], "maker"))
        assert callable(cli.declared(name, spec["report"], "report writer"))


def test_a_bundle_is_a_folder_that_declares_its_demo(stand_ins):
    (stand_ins / "half_made" / "configs").mkdir(parents=True)
    (stand_ins / "half_made" / "configs" / "train.json").write_text("{}", encoding="utf-8")
    (stand_ins / "notes").mkdir()
    assert list(cli.bundle_specs()) == ["toy"]
    with pytest.raises(SystemExit, match="no bundle named 'half_made'.*bundles: toy"):
        main(["demo", "half_made"])
    (stand_ins / "toy" / "configs" / "demo.json").write_text('{"description": "x"}', encoding="utf-8")
    with pytest.raises(SystemExit, match="lacks expected_time, synthetic, report"):
        cli.bundle_specs()


def test_demo_runs_the_declared_overlays_and_calls_the_declared_report_writer(stand_ins, tmp_path, capsys):
    main(["demo", "toy", "--output_dir", str(tmp_path / "out"), "--max_epochs", "3"])
    given = json.loads((tmp_path / "out" / "report.md").read_text(encoding="utf-8"))
    configs = stand_ins / "toy" / "configs"
    assert given["bundle"] == "toy" and given["scale"] == [str(configs / "short.json")]
    out = tmp_path / "out"
    assert given["overrides"] == {"bundle_root": str(out), "output_dir": str(out / "eval"), "max_epochs": 3}
    assert given["steps"] == ["train", "evaluate"] and given["inference"] is None
    printed = capsys.readouterr().out
    assert "--max_epochs 3" in printed and f"{configs / 'short.json'}" in printed
    assert "wrote models/model.pt in" in printed and "wrote eval/*.csv in" in printed


def test_demo_all_reports_a_failing_bundle_and_still_runs_the_others(stand_ins, tmp_path, capsys):
    _declare(stand_ins, "broken_one")
    _declare(stand_ins, "unknown_writer", report="medguide.cli.no_such_writer")
    with pytest.raises(SystemExit, match="2 of 3 bundles failed: broken_one, unknown_writer"):
        main(["demo", "all", "--output_dir", str(tmp_path / "out")])
    summary = capsys.readouterr().out.split("medguide demo all: 3 bundles\n")[1].splitlines()
    assert [line.split()[0] for line in summary] == ["broken_one", "toy", "unknown_writer"]
    assert "FAILED: RuntimeError: medguide demo broken_one: the train step left no models/model.pt" in summary[0]
    assert summary[1].endswith(str(tmp_path / "out" / "toy" / "report.md"))
    assert "'medguide.cli.no_such_writer' in configs/demo.json is not an importable callable" in summary[2]


def test_synthetic_offers_the_declared_kinds_and_calls_the_declared_maker(stand_ins, tmp_path, capsys):
    main(["synthetic", "toy", str(tmp_path / "set"), "--num_cases", "3", "--shape", "8", "8", "4"])
    assert capsys.readouterr().out.strip() == f"toy set in {tmp_path / 'set'}: 3 cases, seed 0, shape (8, 8, 4)"
    with pytest.raises(SystemExit):
        main(["synthetic", "brats", str(tmp_path / "set")])
    error = capsys.readouterr().err
    assert "invalid choice: 'brats'" in error and "toy" in error
    _declare(stand_ins, "other_toy", synthetic={"kind": "toy", "maker": "medguide.data.make_brats_dataset"})
    with pytest.raises(SystemExit, match="bundles other_toy and toy declare synthetic kind 'toy' with different"):
        main(["synthetic", "--help"])


def test_synthetic_kinds_are_those_the_real_bundles_declare(capsys):
    with pytest.raises(SystemExit):
        main(["synthetic", "--help"])
    owners = {}
    for name, spec in _declarations().items():
        owners.setdefault(spec["synthetic"]["kind"], name)
    assert {"brats", "liver"} <= set(owners)
    assert "{" + ",".join(sorted(owners)) + "}" in capsys.readouterr().out
    assert {kind: bundle for kind, (bundle, _) in cli.synthetic_makers().items()} == owners


@pytest.mark.parametrize(
    "content, problem",
    [
        ("5", "must be a JSON object, got 5"),
        ('["toy"]', "must be a JSON object"),
        ("{not json", "is not valid JSON"),
        (json.dumps({"description": "", "expected_time": "", "report": "", "synthetic": 5}), "synthetic must be an"),
        (json.dumps({"description": "", "expected_time": "", "report": "", "synthetic": "toy"}), "synthetic must be"),
    ],
)
def test_a_bad_declaration_is_named_in_one_line(stand_ins, content, problem):
    path = stand_ins / "toy" / "configs" / "demo.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SystemExit, match=f"^{re.escape(str(path))}: the demo declaration.*{problem}[^\\n]*$"):
        cli.bundle_specs()


def test_an_unreadable_declaration_is_named_in_one_line(tmp_path):
    folder = tmp_path / "demo.json"
    folder.mkdir()
    with pytest.raises(
        SystemExit, match=f"^{re.escape(str(folder))}: the demo declaration cannot be read \\(Is a directory\\)$"
    ):
        cli._read_declaration(folder)


def trained_folder(root: Path, settings: str) -> Path:
    (root / "models").mkdir(parents=True)
    (root / "models" / "network.json").write_text(settings, encoding="utf-8")
    return root


def test_a_bad_declaration_fails_only_the_commands_that_read_it(stand_ins, tmp_path, capsys):
    bad = stand_ins / "bad" / "configs" / "demo.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("[]", encoding="utf-8")
    main(["demo", "toy", "--output_dir", str(tmp_path / "out")])
    trained = trained_folder(tmp_path / "trained", json.dumps({"bundle": "toy", "settings": {}}))
    main(["predict", str(trained), str(tmp_path), str(tmp_path / "predictions")])
    assert "medguide predict (toy)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "Bundles: bad, toy" in capsys.readouterr().out
    for command in (["demo", "bad"], ["demo", "--list"], ["demo", "all"], ["synthetic", "toy", str(tmp_path)]):
        with pytest.raises(SystemExit, match=f"^{re.escape(str(bad))}: the demo declaration must be a JSON object"):
            main(command)


@pytest.mark.parametrize(
    "settings, problem",
    [
        ("{not json", "is not valid JSON"),
        ("[]", "names no bundle"),
        (json.dumps({"settings": {"base_width": 8}}), "names no bundle"),
    ],
)
def test_predict_names_a_bad_settings_file_in_one_line(stand_ins, tmp_path, settings, problem):
    trained = trained_folder(tmp_path / "trained", settings)
    path = trained / "models" / "network.json"
    with pytest.raises(SystemExit, match=f"^{re.escape(str(path))}: the network settings file {problem}[^\\n]*$"):
        main(["predict", str(trained), str(tmp_path), str(tmp_path / "predictions")])
