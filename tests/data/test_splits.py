"""Stratified splits: the ratios, every class in every part, the same parts for the same seed."""

from collections import Counter

import pytest

from medguide.data import InputError, proportional_counts, stratified_split


def _items(counts: dict[str, int]) -> list[dict]:
    return [{"case": f"{label}{i}", "label": label} for label, n in counts.items() for i in range(n)]


def test_ratios_and_every_class_in_every_part():
    items = _items({"G": 36, "A": 15, "O": 9})  # the synthetic CPM-RadPath shares
    parts = stratified_split(items, (0.6, 0.2, 0.2), seed=0)
    assert [len(p) for p in parts] == [36, 12, 12]
    for part in parts:
        assert set(Counter(item["label"] for item in part)) == {"G", "A", "O"}
    cases = [item["case"] for part in parts for item in part]
    assert sorted(cases) == sorted(item["case"] for item in items)  # each case once


def test_order_kept_within_a_part_and_items_copied():
    items = _items({"G": 10, "A": 10})
    train, _ = stratified_split(items, (0.5, 0.5), seed=3)
    order = [item["case"] for item in items]
    assert [order.index(item["case"]) for item in train] == sorted(order.index(item["case"]) for item in train)
    train[0]["label"] = "changed"
    assert all(item["label"] != "changed" for item in items)


def test_seeded():
    items = _items({"G": 20, "A": 12, "O": 8})
    assert stratified_split(items, (0.7, 0.3), seed=1) == stratified_split(items, (0.7, 0.3), seed=1)
    assert stratified_split(items, (0.7, 0.3), seed=1) != stratified_split(items, (0.7, 0.3), seed=2)


def test_small_classes_do_not_all_round_into_one_part():
    # ten classes of two: rounded class by class alone, every class would send its second case to the same part
    items = _items({f"c{k}": 2 for k in range(10)})
    assert [len(p) for p in stratified_split(items, (0.6, 0.2, 0.2), seed=0)] == [12, 4, 4]


def test_a_class_smaller_than_the_parts_goes_where_it_can():
    items = _items({"G": 30, "O": 2})
    parts = stratified_split(items, (0.6, 0.2, 0.2), seed=0)
    assert sum(item["label"] == "O" for part in parts for item in part) == 2
    assert all(any(item["label"] == "G" for item in part) for part in parts)


def test_key_function_for_several_tasks():
    items = [{"case": str(i), "label": {"diagnosis": i % 5, "streaks": i % 3}} for i in range(50)]
    parts = stratified_split(items, (413, 203, 395), seed=0, key=lambda item: item["label"]["diagnosis"])
    for part in parts:
        assert {item["label"]["diagnosis"] for item in part} == set(range(5))


@pytest.mark.parametrize("ratios", [(), (0, 0), (0.5, -0.1)])
def test_bad_ratios(ratios):
    with pytest.raises(InputError, match="ratios"):
        stratified_split(_items({"G": 4}), ratios)


def test_item_without_a_class_is_named():
    with pytest.raises(InputError, match="'c2'"):
        stratified_split([{"case": "c1", "label": 0}, {"case": "c2"}], (0.5, 0.5))


def test_proportional_counts():
    assert proportional_counts(60, [0.6, 0.25, 0.15]).tolist() == [36, 15, 9]
    assert proportional_counts(3, [0.6, 0.25, 0.15]).tolist() == [1, 1, 1]  # each share one, when there are enough
    assert proportional_counts(2, [0.6, 0.25, 0.15]).tolist() == [1, 1, 0]
