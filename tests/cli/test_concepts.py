"""``medguide concepts embed``: the concept list becomes a matrix of unit rows, the same list the same matrix, an
edited list another one; bad lists are named by file and line; the shipped matrix is what the shipped list gives."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from medguide.cli.main import main
from medguide.data import InputError, MissingInputError, load_concepts
from tests.bundles.helpers import REPO

CONCEPTS = REPO / "bundles" / "octcoda_fundus_classification" / "concepts"
SHIPPED_LIST, SHIPPED_MATRIX = CONCEPTS / "concepts.csv", CONCEPTS / "concepts_default.npz"


def _embed(concept_list, out, *options):
    main(["concepts", "embed", str(concept_list), str(out), *options])
    return load_concepts(out)


def test_embed_writes_unit_rows_one_per_concept(tmp_path, capsys):
    written = _embed(SHIPPED_LIST, tmp_path / "t.npz", "--dim", "16")
    lines = SHIPPED_LIST.read_text(encoding="utf-8").splitlines()[1:]
    assert written["embeddings"].shape == (len(lines), 16) and written["embeddings"].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(written["embeddings"], axis=1), 1.0, atol=1e-6)
    assert written["concepts"][0] == lines[0].rsplit(",", 1)[0] and written["classes"][0] == lines[0].rsplit(",", 1)[1]
    assert written["encoder"].startswith("tfidf:")
    assert "per class: NOR 8," in capsys.readouterr().out


def test_the_same_list_gives_the_same_matrix(tmp_path):
    first = _embed(SHIPPED_LIST, tmp_path / "a.npz")["embeddings"]
    np.testing.assert_array_equal(_embed(SHIPPED_LIST, tmp_path / "b.npz")["embeddings"], first)


def test_editing_one_concept_changes_its_row(tmp_path):
    lines = SHIPPED_LIST.read_text(encoding="utf-8").splitlines()
    assert lines[1].startswith("pink optic disc")
    edited = tmp_path / "edited.csv"
    edited.write_text("\n".join([lines[0], "swollen optic disc with a haemorrhage,NOR", *lines[2:]]), encoding="utf-8")
    before = _embed(SHIPPED_LIST, tmp_path / "before.npz")["embeddings"]
    after = _embed(edited, tmp_path / "after.npz")["embeddings"]
    assert float(before[0] @ after[0]) < 0.9
    # the default encoder is fitted to the whole list, so the other rows move too (a fixed encoder would keep them)
    assert not np.allclose(before[1:], after[1:], atol=1e-4)


@pytest.mark.parametrize(
    "content, message",
    [
        ("concept,label\ndrusen at the macula,dAMD\n", "has no column 'class'"),
        ("concept,class\ndrusen at the macula,dAMD\n  ,NOR\n", "line 3: empty concept"),
        ("concept,class\ndrusen at the macula,AMD\n", "line 2: unknown class 'AMD'"),
        ("concept,class\nno fluid, haemorrhage or exudate,NOR\n", "line 2: more cells than the header; quote"),
        (
            "concept,class\nDrusen at the macula,dAMD\nenlarged optic cup,GLC\ndrusen  at the macula,dAMD\n",
            "line 4: concept 'drusen  at the macula' is already on line 2",
        ),
        ("concept,class\n", "holds no concept"),
    ],
    ids=["missing column", "empty text", "unknown class", "unquoted comma", "duplicate", "no rows"],
)
def test_a_bad_list_is_named_by_file_and_line(tmp_path, content, message):
    bad = tmp_path / "bad.csv"
    bad.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message) as error:
        main(["concepts", "embed", str(bad), str(tmp_path / "t.npz"), "--dim", "1"])
    assert str(bad) in str(error.value)
    assert not (tmp_path / "t.npz").exists()


def test_a_missing_list_is_named(tmp_path):
    with pytest.raises(MissingInputError, match="concept list not found: .*nothing.csv"):
        main(["concepts", "embed", str(tmp_path / "nothing.csv"), str(tmp_path / "t.npz")])


def test_too_many_dimensions_and_unknown_encoders_are_refused(tmp_path):
    with pytest.raises(InputError, match="80 concepts take --dim 79 at most, got 80"):
        main(["concepts", "embed", str(SHIPPED_LIST), str(tmp_path / "t.npz"), "--dim", "80"])
    with pytest.raises(InputError, match="unknown text encoder 'bert'; encoders: tfidf, hf"):
        main(["concepts", "embed", str(SHIPPED_LIST), str(tmp_path / "t.npz"), "--encoder", "bert"])


def test_a_hugging_face_model_without_transformers_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed, wherever the tests run
    with pytest.raises(InputError, match="needs the Python package 'transformers'.*pip install transformers"):
        main(["concepts", "embed", str(SHIPPED_LIST), str(tmp_path / "t.npz"), "--encoder", f"hf:{tmp_path}"])


def test_the_shipped_matrix_is_what_the_shipped_list_gives(tmp_path):
    shipped, made = load_concepts(SHIPPED_MATRIX), _embed(SHIPPED_LIST, tmp_path / "t.npz")
    assert (shipped["concepts"], shipped["classes"], shipped["encoder"]) == (
        made["concepts"],
        made["classes"],
        made["encoder"],
    ), f"regenerate the shipped matrix: see {CONCEPTS / 'README.md'}"
    np.testing.assert_allclose(shipped["embeddings"], made["embeddings"], atol=1e-5)
