import numpy as np
import pytest

from envs.parsing import parse_action
from envs.types import RankingOutcome, RatingOutcome
from rewards import COMPLETION_TASKS, CompletionTask, completion_trajectory, compute_score, trl_reward_func
from rewards.adapters import RATING_TAGS, ranking_outcome, rating_outcome

CANDIDATES = ["10", "20", "30", "40"]


# Outcomes of one completion ----------------------------------------------------------------------


@pytest.mark.parametrize("text, outcome, valid", [
    ("<recommend>30, 10</recommend>", RankingOutcome(("30", "10", "20", "40"), rank=1), True),
    # unlisted candidates follow in the order given, as in SequentialRec-v0
    ("<recommend>20</recommend>", RankingOutcome(("20", "10", "30", "40"), rank=3), True),
    # a non-candidate or a repeat is dropped and makes it ill-formed
    ("<recommend>99, 40, 40</recommend>", RankingOutcome(("40", "10", "20", "30"), rank=4), False),
    ("<recommend>99</recommend>", RankingOutcome((), rank=None), False),
    ("<recommend></recommend>", RankingOutcome((), rank=None), False),
    ("no tags at all", RankingOutcome((), rank=None), False),
    # a parse error (unclosed plan) makes a usable ranking ill-formed
    ("<plan>x<recommend>30</recommend>", RankingOutcome(("30", "10", "20", "40"), rank=1), False),
])
def test_ranking_outcome_with_candidates(text, outcome, valid):
    row = {"target_item_id": "30", "candidate_item_ids": CANDIDATES}
    assert ranking_outcome(parse_action(text), row) == (outcome, valid)


def test_ranking_outcome_without_candidates_is_the_list_as_written():
    row = {"target_item_id": 7}  # ids are compared as text
    assert ranking_outcome(parse_action("<recommend>3, 7, 3</recommend>"), row) == (
        RankingOutcome(("3", "7"), rank=2), True)
    assert ranking_outcome(parse_action("<recommend>3</recommend>"), row) == (RankingOutcome(("3",), rank=None), True)


@pytest.mark.parametrize("text, prediction, valid", [
    ("<answer>4</answer>", 4.0, True),
    ("<plan>avg 3.6</plan><answer> 3.5 </answer>", 3.5, True),
    ("<answer>7</answer>", 7.0, False),
    ("<answer>four</answer>", None, False),
    ("4", None, False),
    ("<recommend>1</recommend><answer>4</answer>", 4.0, False),  # a tag the rating env does not take
])
def test_rating_outcome(text, prediction, valid):
    outcome, format_valid = rating_outcome(parse_action(text, tags=RATING_TAGS), {"target_rating": 4})
    assert outcome == RatingOutcome(prediction=prediction, target=4.0)
    assert format_valid is valid


def test_completion_trajectory_is_one_policy_turn():
    trajectory = completion_trajectory("SequentialRec-v0", "<recommend>20, 30</recommend>",
                                       {"target_item_id": "30", "candidate_item_ids": CANDIDATES, "task_id": "u1"},
                                       source="trl")
    assert (trajectory.env_id, trajectory.task_id, trajectory.source) == ("SequentialRec-v0", "u1", "trl")
    assert [turn.role for turn in trajectory.turns] == ["policy"]
    assert trajectory.actions[0].recommend == ["20", "30"]
    assert trajectory.rank == 2 and trajectory.format_valid and trajectory.terminated


def test_completion_trajectory_names_a_missing_truth_column():
    with pytest.raises(ValueError, match=r"'target_rating' column; the row has \['target_item_id'\]"):
        completion_trajectory("RatingPrediction-v0", "<answer>3</answer>", {"target_item_id": "1"}, source="trl")


# TRL ---------------------------------------------------------------------------------------------


def test_trl_reward_func_scores_each_completion_with_its_row():
    reward_func = trl_reward_func({"format": 1.0, "mrr": 2.0}, env_id="SequentialRec-v0")
    logged = {}
    rewards = reward_func(
        prompts=["p1", "p1", "p2"],
        completions=["<recommend>10, 30</recommend>", "<recommend>30</recommend>", "nothing"],
        completion_ids=[[1], [2], [3]],
        target_item_id=["30", "30", "40"],
        candidate_item_ids=[CANDIDATES, CANDIDATES, CANDIDATES],
        trainer_state=None,
        log_metric=lambda name, value: logged.setdefault(name, value),
    )
    # 1 + 2 * 1/2; 1 + 2 * 1; -1 + 0
    assert rewards == pytest.approx([2.0, 3.0, -1.0])
    assert logged == pytest.approx({"reward/format": 1 / 3, "reward/mrr": 0.5})


def test_trl_reward_func_reads_conversational_completions():
    reward_func = trl_reward_func({"rp_v1": 1.0}, env_id="RatingPrediction-v0")
    completions = [[{"role": "assistant", "content": "<answer>2</answer>"}],
                   [{"role": "assistant", "content": "<answer>5</answer>"}, {"role": "tool", "content": "x"}],
                   []]
    # -(4 - 2)^2, -(4 - 5)^2, no answer: -(4 - 0)^2
    assert reward_func(["p"] * 3, completions, target_rating=[4.0, 4.0, 4.0]) == [-4.0, -1.0, -16.0]


def test_trl_reward_func_defaults_and_early_errors():
    # ranking defaults: RewardConfig's format + tiered_hit; rank 2 scores 1 + 2/3
    assert trl_reward_func()(["p"], ["<recommend>1, 2</recommend>"], target_item_id=["2"]) == [pytest.approx(5 / 3)]
    with pytest.raises(ValueError, match="no completion scoring for environment 'Nope-v0'; known: "
                                         "RatingPrediction-v0, SequentialRec-v0"):
        trl_reward_func(env_id="Nope-v0")
    with pytest.raises(ValueError, match="Unknown reward 'hit'"):
        trl_reward_func({"hit": 1.0})
    with pytest.raises(ValueError, match="'target_item_id' column"):
        trl_reward_func()(["p"], ["<recommend>1</recommend>"], target=["1"])


@pytest.mark.slow
def test_trl_grpo_trainer_runs_a_step_with_our_reward(tiny_model_dir, tiny_tokenizer, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    scored = trl_reward_func({"format": 1.0, "tiered_hit": 1.0})
    calls = []

    def recrl(prompts, completions, **kwargs):
        rewards = scored(prompts, completions, **kwargs)
        calls.append({"completions": completions, "rewards": rewards, "target_item_id": kwargs["target_item_id"],
                      "candidate_item_ids": kwargs["candidate_item_ids"]})
        return rewards

    rows = [{"prompt": f"Rank 1, 2, 3 for user {user}:", "target_item_id": str(user % 3 + 1),
             "candidate_item_ids": ["1", "2", "3"]} for user in range(4)]
    config = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], logging_steps=1,
                        max_steps=1, num_generations=2, per_device_train_batch_size=4, max_completion_length=6,
                        save_strategy="no", seed=0)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), reward_funcs=recrl, args=config,
                          train_dataset=Dataset.from_list(rows), processing_class=tiny_tokenizer)
    trainer.train()

    assert len(calls) == 1
    call = calls[0]
    assert len(call["completions"]) == 4 and all(isinstance(c, str) for c in call["completions"])
    # two prompts, two completions each, every completion with its own row's columns
    assert call["target_item_id"][0::2] == call["target_item_id"][1::2]
    assert all(candidates == ["1", "2", "3"] for candidates in call["candidate_item_ids"])
    # our rewards are what TRL logged
    step = trainer.state.log_history[0]
    assert trainer.state.global_step == 1
    assert step["reward"] == pytest.approx(sum(call["rewards"]) / 4)
    assert step["rewards/recrl/mean"] == pytest.approx(step["reward"])
    assert {"reward/format", "reward/tiered_hit"} <= set(step)


# veRL --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solution, weights, expected", [
    ("<recommend>20, 30</recommend>", {"format": 1.0, "tiered_hit": 1.0}, 1 + 2 / 3),
    ("<recommend>20, 10, 40</recommend>", {"format": 1.0, "tiered_hit": 1.0}, 1 + 1 / 3),  # rank 4: tier 1/3
    ("<recommend>30</recommend>", {"hr@1": 2.0, "ndcg@5": 1.0}, 3.0),
    ("<recommend>99</recommend>", {"format": 1.0, "mrr": 1.0}, -1.0),
    ("<recommend>40, 20, 30</recommend>", None, 1 + 2 / 3),  # default weights: format + tiered_hit
])
def test_compute_score_ranking(solution, weights, expected):
    extra_info = {"candidate_item_ids": CANDIDATES, "index": 0, "split": "train"}
    if weights is not None:
        extra_info["reward_weights"] = weights
    assert compute_score("SequentialRec-v0", solution, "30", extra_info) == pytest.approx(expected)


def test_compute_score_ranking_reads_candidates_from_parquet_arrays():
    extra_info = {"candidate_item_ids": np.array([10, 20, 30, 40]), "reward_weights": {"mrr": 1.0}}
    # 20 listed, then 10, 30, 40 in the order given: target 30 is third
    assert compute_score("SequentialRec-v0", "<recommend>20</recommend>", 30, extra_info) == pytest.approx(1 / 3)
    # without candidates the list as written: 30 is missing
    assert compute_score("SequentialRec-v0", "<recommend>20</recommend>", "30", {"reward_weights": {"mrr": 1.0}}) == 0.0


@pytest.mark.parametrize("solution, ground_truth, expected", [
    ("<answer>3</answer>", 4.0, 0.0),        # format 1, rp_v1 -(4 - 3)^2
    ("<answer>4</answer>", "4", 1.0),        # exact
    ("<answer>1.5</answer>", 5, -11.25),     # 1 - 3.5^2
    ("<answer>9</answer>", 2.0, -5.0),       # out of range: ill-formed, rated 0: -1 - 4
    ("I'd say 4", 4.0, -17.0),               # no tag: -1 - 16
])
def test_compute_score_rating_defaults(solution, ground_truth, expected):
    assert compute_score("RatingPrediction-v0", solution, ground_truth) == pytest.approx(expected)


def test_compute_score_rating_with_weights():
    extra_info = {"reward_weights": {"rp_v2": 1.0, "format": 0.5}}
    # one answer, unchanged: 4 - (5 - 3)^2 = 0; format 0.5
    assert compute_score("RatingPrediction-v0", "<answer>3</answer>", 5, extra_info) == pytest.approx(0.5)


def test_compute_score_dispatches_through_the_registry(monkeypatch):
    with pytest.raises(ValueError, match="no completion scoring for environment 'openai/gsm8k'"):
        compute_score("openai/gsm8k", "<answer>3</answer>", "3")
    monkeypatch.setitem(COMPLETION_TASKS, "TopPick-v0", CompletionTask(
        tags=("recommend",), truth_column="target_item_id", default_weights={"hr@1": 1.0},
        outcome=lambda action, row: ranking_outcome(action, {"target_item_id": row["target_item_id"]})))
    assert compute_score("TopPick-v0", "<recommend>5, 6</recommend>", "5") == 1.0
    assert compute_score("TopPick-v0", "<recommend>6, 5</recommend>", "5") == 0.0
