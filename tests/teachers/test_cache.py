"""Teacher-embedding cache: round trip, hits, invalidation, concurrent writers."""

import multiprocessing as mp
import threading

import pytest
import torch
from teacher_helpers import make_teacher, random_masks

from region_sam3.teachers import TeacherEmbeddingCache


def test_round_trip_and_counters(tmp_path) -> None:
    c = TeacherEmbeddingCache(tmp_path, "abc123")
    e = torch.randn(3, 8)
    assert c.get(42, [1, 2, 3]) is None
    c.put(42, [1, 2, 3], e)
    torch.testing.assert_close(c.get(42, [3, 1]), e[[2, 0]], rtol=0, atol=0)
    assert c.get(42, [1, 99]) is None  # any missing annotation -> miss
    c.put(42, [99], e[:1] * 2)  # merge keeps earlier rows
    torch.testing.assert_close(c.get(42, [1, 99]), torch.stack([e[0], 2 * e[0]]), rtol=0, atol=0)
    assert c.stats() == {"hits": 2, "misses": 2}
    with pytest.raises(ValueError):
        c.put(1, [1, 2], e)


def test_second_pass_hits_and_hash_invalidation(tmp_path, images) -> None:
    teacher = make_teacher("clip_vit")
    masks = random_masks(3)
    idx = torch.tensor([0, 0, 1])
    ann_ids = {0: [10, 11], 1: [20]}

    def run(t, cache):
        out = {}
        for i in (0, 1):
            got = cache.get(f"img{i}", ann_ids[i])
            if got is None:
                got = t(images[i : i + 1], masks[idx == i])
                cache.put(f"img{i}", ann_ids[i], got)
            out[i] = got
        return out

    c1 = TeacherEmbeddingCache(tmp_path, teacher.config_hash())
    first = run(teacher, c1)
    c2 = TeacherEmbeddingCache(tmp_path, teacher.config_hash())
    second = run(teacher, c2)
    assert c1.stats() == {"hits": 0, "misses": 2} and c2.stats() == {"hits": 2, "misses": 0}
    for i in (0, 1):
        assert torch.equal(first[i], second[i])

    other = make_teacher("clip_vit", mask_mode="binary")
    assert other.config_hash() != teacher.config_hash()
    c3 = TeacherEmbeddingCache(tmp_path, other.config_hash())
    run(other, c3)
    assert c3.stats() == {"hits": 0, "misses": 2}


def _writer(root: str, worker: int, n: int, barrier=None) -> None:
    c = TeacherEmbeddingCache(root, "h")
    if barrier is not None:
        barrier.wait(30)  # start writing at the same moment
    for k in range(n):
        # same image from every writer + one private image each
        c.put("shared", [worker * 100 + k], torch.full((1, 16), float(worker)))
        c.put(f"own{worker}", [k], torch.full((1, 16), float(k)))


def _check_consistent(root, workers: int, n: int) -> None:
    c = TeacherEmbeddingCache(root, "h")
    for w in range(workers):
        got = c.get(f"own{w}", [n - 1])
        assert got is not None  # the last put of a single writer is never lost
        assert torch.equal(got, torch.full((1, 16), float(n - 1)))
    # Every entry every writer put for the shared image is there: no write loses another's.
    shared = [w * 100 + k for w in range(workers) for k in range(n)]
    got = c.get("shared", shared)
    assert got is not None, "an entry of the shared image was lost"
    assert torch.equal(got, torch.tensor([float(a // 100) for a in shared])[:, None].expand(-1, 16))
    assert not list(c.dir.rglob("*.tmp"))


def test_concurrent_threads(tmp_path) -> None:
    threads = [threading.Thread(target=_writer, args=(str(tmp_path), w, 15)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _check_consistent(tmp_path, 3, 15)


def test_concurrent_processes(tmp_path) -> None:
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 40, barrier)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    _check_consistent(tmp_path, 2, 40)


def test_corrupt_file_is_a_miss(tmp_path) -> None:
    c = TeacherEmbeddingCache(tmp_path, "h")
    c.put(1, [1], torch.ones(1, 4))
    c.path(1, 1).write_bytes(b"not a torch file")
    assert c.get(1, [1]) is None and c.misses == 1


def test_dataset_identity_follows_file_content_and_resolution(tmp_path):
    from region_sam3.teachers.cache import TeacherEmbeddingCache, dataset_identity

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text('{"images": [{"id": 1}]}')
    b.write_text('{"images": [{"id": 2}]}')
    assert dataset_identity(a, 224) == dataset_identity(tmp_path / "a.json", 224)
    assert len({dataset_identity(a, 224), dataset_identity(b, 224), dataset_identity(a, 1008),
                dataset_identity(a, 224, keep_aspect_ratio=True)}) == 4
    first = TeacherEmbeddingCache(tmp_path / "c", "t1", dataset_key=dataset_identity(a, 224))
    second = TeacherEmbeddingCache(tmp_path / "c", "t1", dataset_key=dataset_identity(b, 224))
    first.put(1, [7], torch.ones(1, 4))
    assert second.get(1, [7]) is None and first.get(1, [7]) is not None
    with pytest.raises(ValueError, match="dataset_key"):
        TeacherEmbeddingCache(tmp_path / "c", "t1", dataset_key="../x")
