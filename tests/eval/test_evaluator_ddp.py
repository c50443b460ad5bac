"""Cross-rank gathering, per-iteration keys, crowded split and EvaluatorList."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from region_sam3.eval import (
    COCOMaskEvaluator,
    DatasetEvaluator,
    EvaluatorList,
    MatchedIoUEvaluator,
    QueryPrediction,
    QueryTarget,
    StabilityEvaluator,
    build_default_evaluators,
    split_by_instance_count,
)


def make_queries(n: int = 6, size: int = 32):
    """Deterministic noisy predictions for n queries over 3 images x 2 categories."""
    g = torch.Generator().manual_seed(0)
    preds, targets = [], []
    for i in range(n):
        num_gt = 1 + i % 3
        gt = torch.zeros(num_gt, size, size, dtype=torch.bool)
        for j in range(num_gt):
            y, x = 2 + 9 * j, 3 + 5 * (i % 4)
            gt[j, y : y + 8, x : x + 8] = True
        noise = torch.randn(num_gt + 1, size, size, generator=g)
        logits = torch.cat([gt.float() * 8 - 4, -torch.ones(1, size, size) * 4]) + noise
        scores = torch.rand(num_gt + 1, generator=g)
        preds.append(QueryPrediction(masks=logits, scores=scores))
        targets.append(QueryTarget(image_id=i // 2, category_id=i % 2, masks=gt))
    return preds, targets


def suite(gather_fn=None) -> EvaluatorList:
    return EvaluatorList(
        [
            COCOMaskEvaluator(crowded_thresholds=(4,), gather_fn=gather_fn),
            MatchedIoUEvaluator(crowded_thresholds=(4,), gather_fn=gather_fn),
            StabilityEvaluator(gather_fn=gather_fn),
        ]
    )


def test_two_ranks_with_patched_gather_equal_single_process():
    preds, targets = make_queries()
    single = suite()
    single.process(preds, targets)
    expected = single.evaluate()

    # Rank 0 gets queries 0,2,4 and rank 1 gets 1,3,5 plus a padded repeat of query 1
    # (what DistributedSampler does to even out shards).
    r0, r1 = suite(), suite()
    r0.process(preds[0::2], targets[0::2])
    r1.process(preds[1::2] + preds[1:2], targets[1::2] + targets[1:2])
    for e0, e1 in zip(r0.evaluators, r1.evaluators):
        e0.gather_fn = lambda obj, other=e1: [obj, dict(other._records)]
    assert r0.evaluate() == expected
    assert expected["mask/AP"] > 0  # a meaningful, non-degenerate comparison


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        preds, targets = make_queries()
        ev = suite()
        ev.process(preds[rank::world], targets[rank::world])
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(ev.evaluate(), f)
    finally:
        dist.destroy_process_group()


def test_real_gloo_two_process_gather(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: children inherit the imported modules (spawn re-imports torch: ~15 s on 2 cores).
    mp.start_processes(
        _worker, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="fork"
    )
    preds, targets = make_queries()
    single = suite()
    single.process(preds, targets)
    expected = json.loads(json.dumps(single.evaluate()))
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got == expected  # every rank returns the identical dict


def test_per_iteration_keys_and_ordering():
    preds, targets = make_queries()
    ev = COCOMaskEvaluator()
    perfect = [QueryPrediction(t.masks.float() * 2 - 1, torch.ones(len(t.masks))) for t in targets]
    ev.process({0: preds, 1: perfect}, targets)
    m = ev.evaluate()
    assert m["iter1/mask/AP"] == pytest.approx(1.0)
    assert m["iter0/mask/AP"] < 1.0
    assert "mask/AP" not in m


def test_crowded_split_selects_images_by_instance_count():
    preds, targets = make_queries()
    ev = MatchedIoUEvaluator(crowded_thresholds=(4,))
    ev.process(preds, targets)
    # Images: 0 -> queries with 1+2 GT, 1 -> 3+1, 2 -> 2+3 instances; >= 4 keeps images 1, 2.
    records = ev.gathered_records()[None]
    assert sorted({r.image_id for r in split_by_instance_count(records, 4)}) == [1, 2]
    m = ev.evaluate()
    assert m["crowded4/num_images"] == 2
    assert m["crowded4/miou/num_gt"] == 9


def test_explicit_image_instance_count_overrides_sum():
    t = QueryTarget(0, 0, torch.zeros(1, 8, 8, dtype=torch.bool), image_num_instances=50)
    ev = MatchedIoUEvaluator(crowded_thresholds=(10,))
    ev.process([QueryPrediction(torch.zeros(1, 8, 8), torch.ones(1))], [t])
    assert ev.evaluate()["crowded10/num_images"] == 1


def test_evaluator_list_rejects_conflicting_keys_and_bad_inputs():
    preds, targets = make_queries()
    clash = EvaluatorList([COCOMaskEvaluator(), COCOMaskEvaluator(max_dets=1)])
    clash.process(preds, targets)
    with pytest.raises(KeyError):
        clash.evaluate()
    with pytest.raises(ValueError):
        COCOMaskEvaluator().process(preds[:2], targets[:3])


def test_reset_clears_state_and_default_suite_runs():
    preds, targets = make_queries()
    ev = build_default_evaluators(crowded_thresholds=(4,))
    ev.process(preds, targets)
    first = ev.evaluate()
    assert {"mask/AP", "boundary/AP", "miou/mIoU", "stability/score"} <= first.keys()
    ev.reset()
    assert all(not e._records for e in ev.evaluators if isinstance(e, DatasetEvaluator))
    ev.process(preds, targets)
    assert ev.evaluate() == first
