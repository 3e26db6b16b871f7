"""Report processing: sections, pneumonia attributes with negation and uncertainty, targets, files, vocabulary."""

import json
from pathlib import Path

import pytest
import torch

from medguide.data import InvalidCaseError
from medguide.data.errors import InputError
from medguide.data.reports import (
    ABSENT,
    NOT_MENTIONED,
    PRESENT,
    REPORT_ATTRIBUTES,
    UNCERTAIN,
    ReportAttributesd,
    ReportVocabulary,
    attribute_targets,
    extract_attributes,
    read_report,
    split_report,
)

FIXTURE = Path(__file__).parent / "fixtures" / "iu_xray_attributes.json"
P, A, U, N = PRESENT, ABSENT, UNCERTAIN, NOT_MENTIONED

MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ with cough, evaluate for pneumonia

 COMPARISON:  ___

 FINDINGS:
 No pneumothorax.  There is consolidation in the right lower lobe.  Heart size is
 normal.

 IMPRESSION:
 Right lower lobe pneumonia.
"""


def states(text: str, *names: str) -> tuple[str, ...]:
    found = extract_attributes(text)
    return tuple(found[n] for n in names)


@pytest.mark.parametrize(
    "text, expected",
    [
        # negation
        ("No focal consolidation.", {n: A for n in REPORT_ATTRIBUTES}),
        ("The lungs are clear.", {n: A for n in REPORT_ATTRIBUTES}),
        ("Lungs are free of focal airspace disease. No acute cardiopulmonary process.", {"opacity": A, "left": A}),
        ("No pleural effusion, pneumothorax or focal airspace consolidation.", {"opacity": A}),
        ("Resolved right lower lobe pneumonia.", {"opacity": A, "right": A}),
        ("Right lower lobe pneumonia has resolved.", {"opacity": A, "lower": A}),
        # uncertainty
        ("Cannot exclude pneumonia.", {"opacity": U, "left": N, "right": N, "lower": N, "extensive": N}),
        ("Pneumonia cannot be excluded.", {"opacity": U}),
        ("Left basilar opacity may represent atelectasis or pneumonia.", {"opacity": U, "left": U, "right": A}),
        ("Atelectasis versus pneumonia in the right base.", {"opacity": U, "right": U, "lower": U}),
        ("Possible early infiltrate.", {"opacity": U}),
        ("Opacity concerning for pneumonia.", {"opacity": P}),  # the opacity is seen; only its cause is hedged
        ("Right lower lobe opacity, likely pneumonia.", {"opacity": P, "right": P}),  # "likely" commits
        # sentence scoping: a negation does not cross the sentence, nor "but"
        ("No pneumothorax. Right lower lobe consolidation.", {"opacity": P, "right": P, "left": A, "lower": P}),
        ("No pneumothorax but there is left upper lobe consolidation.", {"opacity": P, "left": P, "upper": P}),
        ("1. No acute disease. 2. Lingular infiltrate.", {"opacity": P, "left": P, "middle": P}),
        (
            "FINDINGS: There is no focal\n consolidation. Right lower lobe\n opacity.",
            {"opacity": P, "right": P, "lower": P},
        ),
        # laterality: the report's words are the patient's side
        ("Bilateral lower lobe infiltrates.", {"left": P, "right": P, "lower": P, "upper": A}),
        ("Bibasilar airspace disease.", {"left": P, "right": P, "lower": P}),
        ("Left lower lobe pneumonia.", {"left": P, "right": A}),
        ("Retrocardiac opacity.", {"opacity": P, "left": P, "lower": P}),
        ("Pneumonia with a small right pleural effusion.", {"opacity": P, "right": N, "extensive": N}),
        # zones
        ("Right upper lobe consolidation.", {"upper": P, "middle": A, "lower": A}),
        ("Right middle lobe pneumonia.", {"right": P, "middle": P, "lower": A}),
        ("Apical airspace opacity on the left.", {"left": P, "upper": P}),
        ("Airspace disease in the left midlung.", {"left": P, "middle": P}),
        ("Airspace disease at the right base.", {"right": P, "lower": P}),
        # extent
        ("Extensive bilateral airspace disease.", {"extensive": P, "upper": N}),
        ("Multifocal pneumonia.", {"extensive": P}),
        ("Small focus of consolidation in the right lower lobe.", {"extensive": A}),
        ("Mild patchy left lower lobe infiltrate.", {"extensive": A}),
        # other findings: atelectasis alone, or an opacity put down to it, is not pneumonia
        ("Left basilar atelectasis.", {n: N for n in REPORT_ATTRIBUTES}),
        ("Streaky left basilar opacity, most consistent with atelectasis.", {"opacity": N}),
        ("Calcified granuloma in the right upper lobe. The lungs are otherwise clear.", {"opacity": A, "upper": A}),
        ("Nodular opacity in the right midlung. No focal consolidation.", {"opacity": A}),
        ("Residua of prior granulomatous infection.", {"opacity": N}),
        ("Heart size is normal. No pneumothorax.", {n: N for n in REPORT_ATTRIBUTES}),
    ],
)
def test_sentences(text, expected):
    found = extract_attributes(text)
    assert set(found) == set(REPORT_ATTRIBUTES)
    assert {name: found[name] for name in expected} == expected, text


def test_opacity_absent_makes_location_absent_and_unlocated_opacity_not_mentioned():
    assert states("No focal consolidation.", "left", "upper", "extensive") == (A, A, A)
    assert states("Pneumonia.", "left", "right", "upper", "middle", "lower", "extensive") == (N,) * 6


def test_mimic_sections_and_header_text_is_ignored():
    sections = split_report(MIMIC_REPORT)
    assert sections.findings.startswith("No pneumothorax.") and sections.findings.endswith("normal.")
    assert sections.impression == "Right lower lobe pneumonia."
    # "evaluate for pneumonia" in the indication is not a finding
    assert states("INDICATION: evaluate for pneumonia.\n\nFINDINGS: The lungs are clear.", "opacity") == (A,)
    assert states(MIMIC_REPORT, "opacity", "right", "left", "lower") == (P, P, A, P)
    only_impression = split_report("FINAL REPORT\nINDICATION: fever\n\nIMPRESSION: No pneumonia.")
    assert only_impression == ("", "No pneumonia.")


def test_iu_xray_sections():
    text = "The lungs are clear. Heart size normal. 1. No acute disease. 2. Old rib fracture."
    assert split_report(text) == (
        "The lungs are clear. Heart size normal.",
        "1. No acute disease. 2. Old rib fracture.",
    )
    assert split_report("The lungs are clear. No acute disease.") == ("The lungs are clear. No acute disease.", "")


def test_attribute_targets_mask_not_mentioned_and_uncertain():
    found = {"opacity": P, "left": A, "right": U, "upper": N}  # missing ones are not mentioned
    targets, mask = attribute_targets(found)
    assert targets.dtype == mask.dtype == torch.float32 and targets.shape == mask.shape == (len(REPORT_ATTRIBUTES),)
    assert targets.tolist() == [1, 0, 0, 0, 0, 0, 0]
    assert mask.tolist() == [1, 1, 0, 0, 0, 0, 0]
    targets, mask = attribute_targets(found, uncertain="positive")
    assert targets.tolist() == [1, 0, 1, 0, 0, 0, 0] and mask.tolist() == [1, 1, 1, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="uncertain"):
        attribute_targets(found, uncertain="negative")
    with pytest.raises(ValueError, match="unknown state"):
        attribute_targets({"opacity": "maybe"})


@pytest.mark.parametrize(
    "content, reason", [(b"", "no text"), (b"  \n\t \n", "no text"), (b"FINDINGS: \xff\xfe clear", "not UTF-8")]
)
def test_read_report_errors_name_case_and_file(tmp_path, content, reason):
    path = tmp_path / "s50414267.txt"
    path.write_bytes(content)
    with pytest.raises(InvalidCaseError, match=reason) as error:
        read_report(path)
    assert error.value.case == "s50414267" and error.value.file == str(path)
    with pytest.raises(InvalidCaseError, match="p10000032"):
        read_report(path, case="p10000032")
    with pytest.raises(InvalidCaseError, match="not found"):
        read_report(tmp_path / "missing.txt")


def test_report_attributes_transform(tmp_path):
    path = tmp_path / "s1.txt"
    path.write_text(MIMIC_REPORT, encoding="utf-8")
    item = ReportAttributesd("report")({"case": "p1/s1", "report": str(path), "image": "x.jpg"})
    assert item["report_text"] == MIMIC_REPORT and item["image"] == "x.jpg"
    assert item["attributes"].tolist() == [1, 0, 1, 0, 0, 1, 0]
    assert item["attribute_mask"].tolist() == [1, 1, 1, 1, 1, 1, 0]
    custom = ReportAttributesd("report", text_key="t", attributes_key="y", mask_key="m", label_key="label")
    item = custom({"report": path})
    assert {"t", "y", "m"} <= set(item)
    assert item["label"].tolist() == [1, 0, 1, 0, 0, 1, -1]  # extent not mentioned: -1, left out of losses
    (tmp_path / "s2.txt").write_text("   ", encoding="utf-8")
    with pytest.raises(InvalidCaseError, match=r"case 'p2/s2': file .*s2\.txt.*no text"):
        ReportAttributesd("report")({"case": "p2/s2", "report": tmp_path / "s2.txt"})


def test_vocabulary_build_encode_and_round_trip(tmp_path):
    texts = ["No focal consolidation.", "Focal consolidation in the right base.", "Right base: XXXX opacity."]
    vocab = ReportVocabulary.build(texts, min_count=2)
    assert vocab.tokens[:3] == ["<pad>", "<unk>", "<cls>"]
    assert set(vocab.tokens[3:]) == {"focal", "consolidation", "right", "base"} and len(vocab) == 7
    ids, mask = vocab.encode("Focal pneumonia, right base consolidation", max_length=8)
    assert ids.dtype == torch.long and mask.dtype == torch.bool and ids.shape == mask.shape == (8,)
    index = vocab.index
    assert ids.tolist() == [2, index["focal"], 1, index["right"], index["base"], index["consolidation"], 0, 0]
    assert mask.tolist() == [True] * 6 + [False] * 2
    ids, mask = vocab.encode("focal " * 20, max_length=4)
    assert ids.tolist() == [2] + [index["focal"]] * 3 and mask.all()
    assert len(ReportVocabulary.build(texts, min_count=1, max_size=5)) == 5
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert ReportVocabulary.load(path).tokens == vocab.tokens
    assert ReportVocabulary.from_json(vocab.to_json()).tokens == vocab.tokens
    path.write_text("{}", encoding="utf-8")
    with pytest.raises(InputError, match="vocab.json"):
        ReportVocabulary.load(path)
    with pytest.raises(ValueError, match="max_length"):
        vocab.encode("x", max_length=0)


def labelled_iu_xray_reports(annotation: Path) -> dict:
    """The fixture with each report's text (``"report"``) looked up by (split, id) in IU X-ray's R2Gen
    ``annotation.json``: the fixture keeps only ids and labels, as the collection's terms do not let us redistribute
    the text."""
    data = json.loads(FIXTURE.read_text(encoding="utf-8"))
    if not annotation.is_file():
        pytest.skip(f"{annotation} not found; the hand-labelled IU X-ray report texts are read from it")
    texts = {
        (split, item["id"]): item["report"]
        for split, items in json.loads(annotation.read_text(encoding="utf-8")).items()
        for item in items
    }
    missing = [f"{item['split']}/{item['id']}" for item in data["reports"] if (item["split"], item["id"]) not in texts]
    if missing:
        pytest.fail(f"labelled IU X-ray reports not found in {annotation} (split/id): {', '.join(missing)}")
    for item in data["reports"]:
        item["report"] = texts[item["split"], item["id"]]
    return data


def test_hand_labelled_iu_xray_reports(sample_data):
    """The hand-labelled reports: at least 30 extracted right in every attribute, and a per-attribute floor under
    the measured accuracy (benchmarks/report_attributes.py; development 0.96-0.98, held-out 0.875-1.0); the misses
    are an opacity explained in another sentence without its place, and the zones of a diffuse opacity."""
    data = labelled_iu_xray_reports(sample_data / "iu-xray-reports" / "annotation.json")
    assert len(data["reports"]) >= 40 and "IU X-ray" in data["source"]
    floors = {False: 0.95, True: 0.85}
    right_everywhere = 0
    for held_out, floor in floors.items():
        reports = [item for item in data["reports"] if item["held_out"] == held_out]
        correct = dict.fromkeys(REPORT_ATTRIBUTES, 0)
        for item in reports:
            found = extract_attributes(item["report"])
            right_everywhere += found == item["labels"]
            for name in REPORT_ATTRIBUTES:
                correct[name] += found[name] == item["labels"][name]
        accuracy = {name: n / len(reports) for name, n in correct.items()}
        assert all(value >= floor for value in accuracy.values()), (held_out, accuracy)
    assert right_everywhere >= 30


def test_all_iu_xray_reports_run(sample_data):
    path = sample_data / "iu-xray-reports" / "annotation.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    data = json.loads(path.read_text(encoding="utf-8"))
    texts = [item["report"] for split in data.values() for item in split]
    found = [extract_attributes(text) for text in texts]
    assert len(found) == len(texts) > 3000
    assert sum(f["opacity"] == P for f in found) > 100 and sum(f["opacity"] == A for f in found) > 2000
