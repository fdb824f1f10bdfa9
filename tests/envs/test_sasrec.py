"""SASRec signal: learns a sequential pattern, caches fits, and handles ids it never saw."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from envs.signals import sasrec
from envs.signals.sasrec import (
    UNKNOWN_ITEM_SCORE,
    SASRecConfig,
    SequentialScorer,
    fit_sasrec,
    load_or_fit_sasrec,
    sasrec_digest,
)

CYCLE = [f"i{k}" for k in range(8)]
TINY = SASRecConfig(
    max_len=6, hidden=16, blocks=1, heads=2, dropout=0.0, epochs=40, batch_size=16, lr=1e-2, bf16=False
)


def cycle_sequences(users: int = 24, length: int = 12) -> dict[str, list[str]]:
    """Every user walks the cycle i0 -> i1 -> ... -> i7 -> i0 from their own start item."""
    return {f"u{user}": [CYCLE[(user + step) % len(CYCLE)] for step in range(length)] for user in range(users)}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny tensors gain nothing from threads, and on a busy machine thread hand-offs dominate."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cycle_scorer(one_torch_thread) -> SequentialScorer:
    return fit_sasrec(cycle_sequences(), TINY, progress=False)


def top_item(scorer: SequentialScorer, history: list[str]) -> str:
    scores = scorer.scores(history, CYCLE)
    return max(CYCLE, key=scores.__getitem__)


def test_learns_the_next_item_of_a_cycle(cycle_scorer):
    for start in range(len(CYCLE)):
        history = [CYCLE[(start + step) % len(CYCLE)] for step in range(4)]
        assert top_item(cycle_scorer, history) == CYCLE[(start + 4) % len(CYCLE)]


def test_batch_scores_match_single_scores_whatever_the_padding(cycle_scorer):
    histories = [["i0"], ["i1", "i2", "i3", "i4", "i5"], []]
    batched = cycle_scorer.scores_batch(histories, [CYCLE] * 3)
    for history, scores in zip(histories, batched):
        single = cycle_scorer.scores(history, CYCLE)
        assert scores.keys() == single.keys()
        assert all(math.isclose(scores[i], single[i], rel_tol=1e-5, abs_tol=1e-5) for i in CYCLE)


def test_only_the_last_max_len_items_count(cycle_scorer):
    recent = ["i2", "i3", "i4", "i5", "i6", "i7"]
    assert cycle_scorer.scores(["i0", "i1", *recent], CYCLE) == cycle_scorer.scores(recent, CYCLE)


def test_unknown_ids_are_skipped_or_scored_lowest(cycle_scorer):
    with_unknown = cycle_scorer.scores(["i1", "nope", "i2"], ["i3", "never-seen"])
    plain = cycle_scorer.scores(["i1", "i2"], ["i3"])
    assert with_unknown["i3"] == plain["i3"]
    assert with_unknown["never-seen"] == UNKNOWN_ITEM_SCORE
    empty = cycle_scorer.scores([], CYCLE)
    assert all(math.isfinite(score) for score in empty.values())
    assert cycle_scorer.scores(["nope"], CYCLE) == empty


def test_save_and_load_give_identical_scores(cycle_scorer, tmp_path):
    cycle_scorer.save(tmp_path / "fit")
    loaded = SequentialScorer.load(tmp_path / "fit")
    assert loaded.item_ids == cycle_scorer.item_ids and loaded.config == TINY
    assert loaded.scores(["i3", "i4"], CYCLE) == cycle_scorer.scores(["i3", "i4"], CYCLE)


def test_load_names_the_fix_for_a_broken_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="refit"):
        SequentialScorer.load(tmp_path)
    (tmp_path / sasrec.META_FILE).write_text("{not json")
    (tmp_path / sasrec.WEIGHTS_FILE).write_bytes(b"")
    with pytest.raises(ValueError, match="delete the folder and refit"):
        SequentialScorer.load(tmp_path)


@pytest.mark.parametrize("bf16", [False, True])
def test_seeded_fits_are_identical_and_leave_global_rng_alone(bf16):
    config = dataclasses.replace(TINY, epochs=3, dropout=0.2, bf16=bf16)
    state = torch.random.get_rng_state()
    first = fit_sasrec(cycle_sequences(), config, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    shuffled = dict(reversed(cycle_sequences().items()))
    second = fit_sasrec(shuffled, config, progress=False)
    other_seed = fit_sasrec(cycle_sequences(), dataclasses.replace(config, seed=1), progress=False)
    assert first.scores(["i1"], CYCLE) == second.scores(["i1"], CYCLE)
    assert first.scores(["i1"], CYCLE) != other_seed.scores(["i1"], CYCLE)


@pytest.fixture
def counted_fits(monkeypatch) -> list[SASRecConfig]:
    """Records the config of every fit that ``load_or_fit_sasrec`` runs."""
    fitted: list[SASRecConfig] = []

    def fit(user_sequences, config, *, progress=True):
        fitted.append(config)
        return fit_sasrec(user_sequences, config, progress=False)

    monkeypatch.setattr(sasrec, "fit_sasrec", fit)
    return fitted


def test_load_or_fit_reuses_the_cache_and_refits_a_changed_config(tmp_path, counted_fits):
    config = dataclasses.replace(TINY, epochs=2)
    first = load_or_fit_sasrec(tmp_path, cycle_sequences(), config)
    again = load_or_fit_sasrec(tmp_path, cycle_sequences(), config)
    assert counted_fits == [config]
    assert again.scores(["i1"], CYCLE) == first.scores(["i1"], CYCLE)
    changed = dataclasses.replace(config, seed=5)
    load_or_fit_sasrec(tmp_path, cycle_sequences(), changed)
    assert counted_fits == [config, changed]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        sasrec_digest(cycle_sequences(), c) for c in (config, changed)
    )


def test_load_or_fit_refits_a_corrupt_cache(tmp_path, counted_fits):
    config = dataclasses.replace(TINY, epochs=2)
    folder = tmp_path / sasrec_digest(cycle_sequences(), config)
    folder.mkdir()
    (folder / sasrec.WEIGHTS_FILE).write_bytes(b"half a file")
    with pytest.warns(UserWarning, match="Refitting SASRec"):
        scorer = load_or_fit_sasrec(tmp_path, cycle_sequences(), config)
    assert counted_fits == [config]
    assert SequentialScorer.load(folder).scores(["i1"], CYCLE) == scorer.scores(["i1"], CYCLE)


def test_digest_depends_on_sequences_and_config_not_dict_order():
    sequences = cycle_sequences()
    assert sasrec_digest(sequences, TINY) == sasrec_digest(dict(reversed(sequences.items())), TINY)
    assert sasrec_digest(sequences, TINY) != sasrec_digest(sequences, dataclasses.replace(TINY, bf16=True))
    assert sasrec_digest(sequences, TINY) != sasrec_digest({**sequences, "u0": ["i1", "i0"]}, TINY)


def test_config_and_data_errors_say_what_to_change():
    with pytest.raises(ValueError, match="must divide hidden"):
        SASRecConfig(hidden=10, heads=3)
    with pytest.raises(ValueError, match="two or more items"):
        fit_sasrec({"u0": ["i0"]}, TINY, progress=False)
