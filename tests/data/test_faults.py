"""Acquisition faults: drawn per image independently and reproducibly, applied where they say and nowhere else."""

import numpy as np
import pytest

from medguide.data.brats import BRATS_MODALITIES, brats_synthetic_case
from medguide.data.faults import FAULT_KINDS, Fault, apply_faults, draw_faults
from medguide.data.liver import liver_synthetic_case

SMALL = (16, 16, 16)


def _kinds(case) -> dict[str, frozenset]:
    return {m: frozenset(f.kind for f in faults) for m, faults in case.faults.items()}


def test_faults_are_drawn_per_sequence_and_reproducible():
    cases = [brats_synthetic_case(SMALL, seed=7, index=i, fault_rate=2.0) for i in range(24)]
    again = brats_synthetic_case(SMALL, seed=7, index=3, fault_rate=2.0)
    assert again.faults == cases[3].faults
    for m in BRATS_MODALITIES:
        np.testing.assert_array_equal(again.images[m], cases[3].images[m])
    patterns = [_kinds(c) for c in cases]
    # within a case the sequences get different faults, and every sequence is sometimes spared
    assert sum(len(set(p.values())) > 1 for p in patterns) >= 20
    for m in BRATS_MODALITIES:
        assert 0 < sum(not p[m] for p in patterns) < len(cases)
    # independent draws: whether one sequence has a bias field says little about another
    has_bias = np.array([[("bias" in p[m]) for m in BRATS_MODALITIES] for p in patterns], float)
    correlation = np.corrcoef(has_bias.T)[np.triu_indices(4, 1)]
    assert np.nanmax(np.abs(correlation)) < 0.6


def test_fault_rate_zero_gives_clean_images_and_faults_stay_in_their_slab():
    for index in range(12):
        faulty = brats_synthetic_case(SMALL, seed=2, index=index, fault_rate=3.0)
        clean = brats_synthetic_case(SMALL, seed=2, index=index, fault_rate=0.0)
        assert all(not f for f in clean.faults.values())
        np.testing.assert_array_equal(faulty.label, clean.label)
        for m, faults in faulty.faults.items():
            if not faults or any(f.kind == "bias" for f in faults):
                continue  # a bias field covers the whole image
            outside = np.ones(SMALL, bool)
            for f in faults:
                index_ = [slice(None)] * 3
                index_[f.axis] = slice(f.start, f.stop)
                outside[tuple(index_)] = False
            np.testing.assert_array_equal(faulty.images[m][outside], clean.images[m][outside])
            assert not np.array_equal(faulty.images[m], clean.images[m])


def test_each_fault_kind_does_what_it_says():
    rng = np.random.default_rng(0)
    image = 1 + 0.1 * rng.standard_normal((20, 20, 20))
    slab = (slice(None), slice(5, 10), slice(None))
    missing = apply_faults(image, (Fault("missing", 1, 5, 10, 1.0),), rng)
    assert (missing[slab] == 0).all() and np.array_equal(missing[:, 10:], image[:, 10:])
    noisy = apply_faults(image, (Fault("noise", 1, 5, 10, 0.3),), rng)
    assert noisy[slab].std() > 2 * image[slab].std()
    blurred = apply_faults(image, (Fault("blur", 1, 5, 10, 2.0),), rng)
    assert blurred[slab].std() < 0.5 * image[slab].std()
    biased = apply_faults(image, (Fault("bias", 0, 0, 20, 0.4),), rng)
    assert biased.std() > 2 * image.std()
    ct = apply_faults(np.full((20, 20, 20), 50.0), (Fault("missing", 2, 0, 3, 1.0),), rng, level=100, fill=-1000)
    assert (ct[:, :, :3] == -1000).all()


def test_draw_faults_checks_its_rates():
    rng = np.random.default_rng(0)
    assert draw_faults(rng, SMALL, {}) == ()
    assert [f.kind for f in draw_faults(rng, SMALL, dict.fromkeys(FAULT_KINDS, 1.0))] == list(FAULT_KINDS)
    with pytest.raises(ValueError, match="unknown fault kinds \\['spike'\\]"):
        draw_faults(rng, SMALL, {"spike": 0.5})
    with pytest.raises(ValueError, match="0..1"):
        draw_faults(rng, SMALL, {"noise": 1.5})


def test_liver_phases_have_their_own_faults_and_shifts():
    cases = [liver_synthetic_case(SMALL, seed=1, index=i, fault_rate=3.0) for i in range(12)]
    assert sum(_kinds(c)["arterial"] != _kinds(c)["venous"] for c in cases) >= 8
    assert all(not any(f.kind == "bias" for f in c.faults["arterial"]) for c in cases)  # CT has no bias field
    # the label is drawn on the venous phase; the arterial phase is shifted by up to 2.5 / 2.5 / 1.5 voxels
    for c in cases:
        assert c.shifts["venous"] == (0.0, 0.0, 0.0)
        assert 0 < np.abs(c.shifts["arterial"]).max() and (np.abs(c.shifts["arterial"]) <= (2.5, 2.5, 1.5)).all()
    # a phase looks the same whether or not the other phase is asked for
    alone = liver_synthetic_case(SMALL, phases=("venous",), seed=1, index=0, fault_rate=3.0)
    np.testing.assert_array_equal(alone.images["venous"], cases[0].images["venous"])
    np.testing.assert_array_equal(alone.label, cases[0].label)


@pytest.mark.parametrize("maker", [brats_synthetic_case, liver_synthetic_case])
def test_case_makers_refuse_bad_settings(maker):
    with pytest.raises(ValueError, match="at least 4 voxels"):
        maker((3, 32, 32))
    with pytest.raises(ValueError, match="fault_rate"):
        maker(SMALL, fault_rate=-1)
