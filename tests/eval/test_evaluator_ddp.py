"""Cross-rank gathering (RLE records to rank 0, metrics broadcast), per-iteration keys,
crowded split and EvaluatorList."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from region_sam3.eval import (
    CGF1Evaluator,
    COCOMaskEvaluator,
    DatasetEvaluator,
    EvaluatorList,
    MatchedIoUEvaluator,
    StabilityEvaluator,
    build_default_evaluators,
    split_by_instance_count,
)
from tests.eval.records import box_mask, detections, ground_truth

S = 32


def make_images(n: int = 6):
    """Deterministic noisy detections for n images x 2 prompted categories."""
    rng = np.random.default_rng(0)
    dets, gts = [], []
    for i in range(n):
        masks, cats = [], []
        for c in (1, 2):
            for j in range(1 + (i + c) % 3):
                masks.append(box_mask(S, S, 2 + 9 * j, 3 + 5 * c, 10 + 9 * j, 11 + 5 * c))
                cats.append(c)
        noisy = [np.logical_xor(m, rng.random((S, S)) > 0.93) for m in masks]
        noisy.append(box_mask(S, S, 0, 24, 6, 32))
        labels = [*cats, 1]
        scores = rng.random(len(noisy))
        order = np.argsort(-scores, kind="stable")
        dets.append(detections(i, [noisy[k] for k in order], scores[order],
                               [labels[k] for k in order], stability=rng.random(len(noisy))[order]))
        gts.append(ground_truth(i, masks, cats, prompted=[1, 2]))
    return dets, gts


def suite(gather_fn=None, broadcast_fn=None) -> EvaluatorList:
    kw = {"gather_fn": gather_fn, "broadcast_fn": broadcast_fn}
    return EvaluatorList([
        COCOMaskEvaluator(crowded_thresholds=(4,), **kw),
        CGF1Evaluator(crowded_thresholds=(4,), **kw),
        MatchedIoUEvaluator(crowded_thresholds=(4,), **kw),
        StabilityEvaluator(**kw),
    ])


def canonical(metrics: dict) -> str:
    return json.dumps(metrics, sort_keys=True)  # NaN == NaN once serialised


def test_two_ranks_with_patched_gather_equal_single_process():
    dets, gts = make_images()
    single = suite()
    single.process(dets, gts)
    expected = single.evaluate()

    # Rank 0 gets images 0,2,4 and rank 1 gets 1,3,5 plus a padded repeat of image 1
    # (what DistributedSampler does to even out shards).
    r0, r1 = suite(), suite()
    r0.process(dets[0::2], gts[0::2])
    r1.process(dets[1::2] + dets[1:2], gts[1::2] + gts[1:2])
    for e0, e1 in zip(r0.evaluators, r1.evaluators):
        e0.gather_fn = lambda obj, other=e1: [obj, (dict(other._records), other._final_alias)]
    assert canonical(r0.evaluate()) == canonical(expected)
    assert expected["mask/AP"] > 0  # a meaningful, non-degenerate comparison


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        dets, gts = make_images()
        ev = suite()
        ev.process(dets[rank::world], gts[rank::world])
        # What rank > 0 holds after the gather: only its own records (RLEs, never dense).
        held = sum(len(r) for e in ev.evaluators for r in e._records.values())
        metrics = ev.evaluate()
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"metrics": metrics, "held": held}, f)
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
    dets, gts = make_images()
    single = suite()
    single.process(dets, gts)
    expected = canonical(single.evaluate())
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert canonical(got["metrics"]) == expected  # every rank returns the identical dict
        assert got["held"] == 3 * 3 + 3  # 3 images x (3 COCO/cgF1/mIoU + 1 stability) records


def test_per_iteration_keys_alias_and_ordering():
    dets, gts = make_images(2)
    perfect = [detections(d.image_id, [np.asarray(
        __import__("pycocotools.mask", fromlist=["decode"]).decode(a["segmentation"]), bool)
        for a in g.annotations], [0.9] * len(g.annotations),
        [a["category_id"] for a in g.annotations],
        iterations={0: [box_mask(S, S, 0, 0, 1, 1)] * len(g.annotations)}, final_iteration=1)
        for d, g in zip(dets, gts)]
    ev = COCOMaskEvaluator()
    ev.process(perfect, gts)
    m = ev.evaluate()
    assert m["mask/AP"] == pytest.approx(1.0)
    assert m["iter1/mask/AP"] == m["mask/AP"]  # the final iterate, copied not recomputed
    assert m["iter0/mask/AP"] == pytest.approx(0.0)
    assert 1 not in ev._records  # never summarised twice


def test_crowded_split_selects_images_by_instance_count():
    dets, gts = make_images()
    ev = MatchedIoUEvaluator(crowded_thresholds=(4,))
    ev.process(dets, gts)
    records = ev.gathered_records()[None]
    counts = {g.image_id: g.num_instances for g in gts}
    assert sorted(r.image_id for r in split_by_instance_count(records, 4)) == sorted(
        i for i, c in counts.items() if c >= 4)
    m = ev.evaluate()
    assert m["crowded4/num_images"] == sum(c >= 4 for c in counts.values())


def test_evaluator_list_rejects_conflicting_keys_and_bad_inputs():
    dets, gts = make_images()
    clash = EvaluatorList([COCOMaskEvaluator(), COCOMaskEvaluator(max_dets=1)])
    clash.process(dets, gts)
    with pytest.raises(KeyError):
        clash.evaluate()
    with pytest.raises(ValueError):
        COCOMaskEvaluator().process(dets[:2], gts[:3])


def test_reset_clears_state_and_default_suite_runs():
    dets, gts = make_images()
    ev = build_default_evaluators(crowded_thresholds=(4,))
    ev.process(dets, gts)
    first = ev.evaluate()
    assert {"mask/AP", "boundary/AP", "cgf1/cgF1", "miou/mIoU", "miou/mIoU_topk",
            "stability/score", "stability/score_topk"} <= first.keys()
    ev.reset()
    assert all(not e._records for e in ev.evaluators if isinstance(e, DatasetEvaluator))
    ev.process(dets, gts)
    assert canonical(ev.evaluate()) == canonical(first)
