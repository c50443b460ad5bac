"""Hard negatives: absent categories sharing a prompt word with a present one."""

from __future__ import annotations

import numpy as np
import pytest

from region_sam3.data.coco import FindQueryDataset, confusable_categories
from region_sam3.data.synthetic import ensure_synthetic_dataset


def test_confusable_categories_share_a_word():
    names = {1: "red circle", 2: "red star", 3: "blue circle", 4: "blue star", 5: "green cross"}
    pools = confusable_categories(names)
    assert pools[1] == {2, 3} and pools[4] == {2, 3} and pools[5] == set()


def _dataset(synthetic_root, tiny_cfg, fraction):
    image_dir, ann_file = ensure_synthetic_dataset(synthetic_root, "train", tiny_cfg)
    return FindQueryDataset(image_dir, ann_file, negative_ratio=2.0, seed=1,
                            hard_negative_fraction=fraction)


def test_all_hard_when_the_pool_allows(synthetic_root, tiny_cfg):
    dataset = _dataset(synthetic_root, tiny_cfg, 1.0)
    hard_share, total = 0, 0
    for index, record in enumerate(dataset.records):
        pos, neg = dataset.select_queries(record, np.random.default_rng([7, index]))
        present = {a["category_id"] for a in record.annotations} | record.crowd_category_ids
        confusable = set().union(*(dataset._confusable[c] for c in present)) - present
        assert not set(neg) & present and len(set(neg)) == len(neg)
        # as many negatives as asked, hard ones first while the pool lasts
        assert len([n for n in neg if n in confusable]) == min(len(neg), len(confusable))
        hard_share += sum(n in confusable for n in neg)
        total += len(neg)
    assert total > 0 and hard_share / total > 0.9


def test_fraction_zero_is_the_uniform_draw(synthetic_root, tiny_cfg):
    """0 keeps the previous draw (same random stream): runs and resumes are unchanged."""
    import math

    dataset = _dataset(synthetic_root, tiny_cfg, 0.0)
    for index, record in enumerate(dataset.records):
        _, neg = dataset.select_queries(record, np.random.default_rng([3, index]))
        rng = np.random.default_rng([3, index])
        present = {a["category_id"] for a in record.annotations} | record.crowd_category_ids
        positives = {a["category_id"] for a in record.annotations}
        pool = np.array(sorted(dataset.category_names))
        candidates = pool[~np.isin(pool, list(present))]
        expected = 2.0 * max(len(positives), 1)
        count = math.floor(expected) + int(rng.random() < expected - math.floor(expected))
        assert neg == sorted(rng.choice(candidates, min(count, len(candidates)),
                                        replace=False).tolist())


def test_fraction_out_of_range_is_rejected(synthetic_root, tiny_cfg):
    with pytest.raises(ValueError, match="hard_negative_fraction"):
        _dataset(synthetic_root, tiny_cfg, 1.5)
