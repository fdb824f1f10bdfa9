"""STAR's RL data: difficulty bins, the 3:4:3 mix and the counts written beside it."""

import pytest

from rl.curriculum import CurriculumConfig, curate, difficulty, mix_counts


def test_bins_follow_star_for_eight_samples_and_scale_with_the_sample_count():
    assert [difficulty(s, 8) for s in (1, 2)] == ["hard", "hard"]
    assert [difficulty(s, 8) for s in (3, 4, 5)] == ["medium"] * 3
    assert [difficulty(s, 8) for s in (6, 7)] == ["easy"] * 2
    assert difficulty(0, 8) is None and difficulty(8, 8) is None
    assert [difficulty(s, 4) for s in range(5)] == [None, "hard", "medium", "easy", None]


def test_mix_takes_the_largest_set_in_proportion():
    assert mix_counts({"easy": 300, "medium": 400, "hard": 300}, [3, 4, 3]) == {"easy": 300, "medium": 400, "hard": 300}
    assert mix_counts({"easy": 100, "medium": 400, "hard": 300}, [3, 4, 3]) == {"easy": 100, "medium": 133, "hard": 100}
    assert mix_counts({"easy": 9, "medium": 9, "hard": 9}, [0, 1, 0]) == {"easy": 0, "medium": 9, "hard": 0}


def test_an_empty_bin_leaves_the_mix_and_the_others_keep_their_proportions():
    # A peaked SFT student: 7 tasks solved 6-7 times of 8, none fewer; 3:4:3 would keep nothing.
    assert mix_counts({"easy": 7, "medium": 0, "hard": 0}, [3, 4, 3]) == {"easy": 7, "medium": 0, "hard": 0}
    # easy : hard stays 3 : 3 without medium tasks.
    assert mix_counts({"easy": 10, "medium": 0, "hard": 4}, [3, 4, 3]) == {"easy": 4, "medium": 0, "hard": 4}
    assert mix_counts({"easy": 0, "medium": 0, "hard": 0}, [3, 4, 3]) == {"easy": 0, "medium": 0, "hard": 0}
    assert mix_counts({"easy": 0, "medium": 5, "hard": 0}, [1, 0, 1]) == {"easy": 0, "medium": 0, "hard": 0}
    kept, counts = curate({"a": 8, "b": 7, "c": 0, "d": 6, "e": 8}, samples=8, mix=[3, 4, 3], seed=0)
    assert kept == {"b": "easy", "d": "easy"} and counts["kept"] == 2


def test_curate_keeps_sometimes_solved_tasks_in_the_mix_with_counts():
    successes = {f"t{i}": s for i, s in enumerate([0, 8, 1, 2, 3, 4, 5, 6, 7, 7, 6, 3, 0])}
    kept, counts = curate(successes, samples=8, mix=[3, 4, 3], seed=0)
    # Available: hard 2 (t2, t3), medium 4 (t4, t5, t6, t11), easy 4 (t7..t10) -> limited by hard: 2/0.3 = 6.67
    # tasks -> easy 2, medium 3 (round 2.67), hard 2.
    assert counts["hard_available"] == 2 and counts["medium_available"] == 4 and counts["easy_available"] == 4
    assert (counts["easy"], counts["medium"], counts["hard"], counts["kept"]) == (2, 3, 2, 7)
    assert counts["candidates"] == 13 and counts["successes"]["0"] == 2 and counts["successes"]["7"] == 2
    assert sorted(kept.values()) == ["easy", "easy", "hard", "hard", "medium", "medium", "medium"]
    assert all(0 < successes[task_id] < 8 for task_id in kept)
    assert list(kept) == [t for t in successes if t in kept]  # candidate order
    assert curate(successes, samples=8, mix=[3, 4, 3], seed=0) == (kept, counts)


@pytest.mark.parametrize("bad", [dict(samples=1), dict(mix=[1, 1]), dict(mix=[0, 0, 0]), dict(mix=[-1, 1, 1])])
def test_config_rejects_what_cannot_bin(bad):
    with pytest.raises(ValueError, match="curriculum"):
        CurriculumConfig(**bad)
