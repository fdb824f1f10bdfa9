import pytest

from envs.types import ParsedAction, RankingOutcome, ToolCall, Trajectory, Turn
from rewards import REWARD_FUNCTIONS, check_weights, register_reward, score, score_batch


def make_trajectory(*, rank, format_valid=True, num_tool_calls=0, turn_rewards=(0.0,)):
    calls = [ToolCall("user_cf", {"user_id": "1"})] * num_tool_calls
    turns = [Turn("policy", "...", action=ParsedAction(tool_calls=calls), reward=r) for r in turn_rewards]
    return Trajectory(
        task_id="t0",
        env_id="SequentialRec-v0",
        source="test",
        turns=turns,
        outcome=RankingOutcome(ranking=("a", "b", "c"), rank=rank),
        format_valid=format_valid,
    )


@pytest.fixture
def restore_registry():
    saved = dict(REWARD_FUNCTIONS)
    yield
    REWARD_FUNCTIONS.clear()
    REWARD_FUNCTIONS.update(saved)


def test_builtin_names():
    assert {"format", "tiered_hit", "hr@1", "hr@3", "hr@5", "ndcg@5", "mrr"} <= set(
        REWARD_FUNCTIONS
    )


def test_score_valid_rank_two_format_plus_tiered():
    total, values = score(make_trajectory(rank=2), {"format": 1.0, "tiered_hit": 1.0})
    assert total == pytest.approx(1 + 2 / 3)
    assert values == pytest.approx({"format": 1.0, "tiered_hit": 2 / 3})


def test_score_applies_weights_but_reports_unweighted_values():
    # invalid format, no rank: 0.5 * -1 + 2 * 0 = -0.5
    total, values = score(
        make_trajectory(rank=None, format_valid=False), {"format": 0.5, "hr@1": 2.0}
    )
    assert total == pytest.approx(-0.5)
    assert values == {"format": -1.0, "hr@1": 0.0}


def test_every_builtin_on_rank_three():
    names = ["format", "tiered_hit", "hr@1", "hr@3", "hr@5", "ndcg@5", "mrr"]
    weights = {name: 1.0 for name in names}
    total, values = score(make_trajectory(rank=3), weights)
    expected = {
        "format": 1.0,
        "tiered_hit": 2 / 3,
        "hr@1": 0.0,
        "hr@3": 1.0,
        "hr@5": 1.0,
        "ndcg@5": 0.5,  # 1 / log2(4)
        "mrr": 1 / 3,
    }
    assert values == pytest.approx(expected)
    # 1 + 2/3 + 0 + 1 + 1 + 0.5 + 1/3 = 4.5
    assert total == pytest.approx(4.5)


def test_unknown_reward_names_it_and_lists_available():
    with pytest.raises(ValueError, match=r"'hit@1'.*Available: .*tiered_hit"):
        score(make_trajectory(rank=1), {"hit@1": 1.0})


@pytest.mark.parametrize(
    "weights", [{}, {"format": float("nan")}, {"format": "1"}, {"format": True}]
)
def test_check_weights_rejects_bad_configs(weights):
    with pytest.raises(ValueError):
        check_weights(weights)


def test_register_reward_adds_a_scorable_reward(restore_registry):
    @register_reward("tool_cost")
    def tool_cost(trajectory: Trajectory) -> float:
        return -0.1 * trajectory.num_tool_calls

    assert REWARD_FUNCTIONS["tool_cost"] is tool_cost
    # 1 * 1 (format) + 2 * (-0.1 * 3) = 0.4
    total, values = score(
        make_trajectory(rank=1, num_tool_calls=3), {"format": 1.0, "tool_cost": 2.0}
    )
    assert values["tool_cost"] == pytest.approx(-0.3)
    assert total == pytest.approx(0.4)


def test_register_reward_refuses_duplicates_unless_overwrite(restore_registry):
    with pytest.raises(ValueError, match="already registered"):
        register_reward("format")(lambda trajectory: 0.0)
    register_reward("format", overwrite=True)(lambda trajectory: 0.0)
    assert score(make_trajectory(rank=1), {"format": 1.0})[0] == 0.0


def test_env_reward_sums_the_turn_rewards():
    trajectory = make_trajectory(rank=2, turn_rewards=(0.0, 0.25, 0.5))
    assert score(trajectory, {"env": 2.0}) == (pytest.approx(1.5), {"env": pytest.approx(0.75)})


def test_score_batch_fills_every_trajectory_and_checks_weights_first():
    batch = [make_trajectory(rank=1), make_trajectory(rank=None, format_valid=False)]
    score_batch(batch, {"format": 1.0, "hr@1": 1.0})
    assert [t.reward for t in batch] == [2.0, -1.0]
    assert batch[1].rewards == {"format": -1.0, "hr@1": 0.0}
    untouched = make_trajectory(rank=1)
    with pytest.raises(ValueError, match="Unknown reward"):
        score_batch([untouched], {"nope": 1.0})
    assert untouched.rewards == {}
