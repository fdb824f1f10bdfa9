"""Tests for ConversationalRec-v0: the protocol, acceptance, rejection, patience, budgets, per-turn
rewards, outcomes, metrics, and the rule-based policy against random ones."""

import gymnasium as gym
import pytest

from envs import make_env
from envs.checker import check_env
from envs.conversational import dialogue_metrics, dialogue_task, recall_at_k, success_rate, turns_to_acceptance
from envs.data import build_tasks
from envs.simulators import RuleBasedSimulator
from envs.types import DialogueOutcome, DialogueTask
from rollout.episode import EpisodeRequest, run_episodes
from teachers.crs_policies import RandomCRSPolicy, RuleBasedCRSPolicy


@pytest.fixture
def world(synthetic_catalog):
    tasks = [dialogue_task(task) for task in build_tasks(synthetic_catalog, num_negatives=9, seed=0)]
    return synthetic_catalog, tasks


def make(world, **kwargs):
    catalog, tasks = world
    return make_env("ConversationalRec-v0", catalog=catalog, tasks=tasks, **kwargs)


def turn(act, say="ok", ids=None):
    return f"<act>{act}</act><say>{say}</say>" + ("" if ids is None else f"<recommend>{', '.join(ids)}</recommend>")


def wrong_ids(task, count=1):
    return [i for i in task.candidate_item_ids if i != task.target_item_id][:count]


def test_passes_check_env_and_gymnasium_make(world):
    check_env(make(world))
    catalog, tasks = world
    env = gym.make("ConversationalRec-v0", catalog=catalog, tasks=tasks)
    observation, info = env.reset(seed=1)
    assert info["task"] in tasks and info["max_turns"] == 8 and info["system_prompt"].startswith("You help a user")


def test_the_opening_shows_every_candidate_with_attributes_and_the_state(world):
    env = make(world)
    task = world[1][0]
    observation, info = env.reset(options={"task": task})
    assert f"Candidates ({len(task.candidate_item_ids)}):" in observation
    for item_id in task.candidate_item_ids:
        item = world[0].items[item_id]
        assert f"{item_id} {item.title} ({item.genres[0]})" in observation
    assert "User: Hi! Can you recommend something for me?" in observation and observation.endswith("Turns left: 8.")
    assert info["candidate_item_ids"] == task.candidate_item_ids


def test_accepts_exactly_the_target_with_per_turn_rewards_and_the_outcome(world):
    env = make(world)
    task = world[1][0]
    env.reset(options={"task": task})
    observation, reward, terminated, truncated, info = env.step(turn("ask_preference", "What do you like?"))
    genre = world[0].items[task.target_item_id].genres[0]
    assert observation.startswith(f"User: I'd like something {genre}.") and "Turns left: 7." in observation
    assert (reward, terminated, truncated, info["errors"], info["outcome"]) == (-0.05, False, False, [], None)
    assert info["observation_role"] == "user" and info["act"] == "ask_preference"
    [wrong] = wrong_ids(task)
    observation, reward, terminated, truncated, info = env.step(turn("recommend", "Try this.", [wrong]))
    assert observation.startswith("User: No, not that one.") and not terminated and reward == -0.05
    assert wrong not in info["candidate_item_ids"] and f"Candidates ({len(task.candidate_item_ids) - 1})" in observation
    _, reward, terminated, truncated, info = env.step(turn("recommend", "This one.", [task.target_item_id]))
    assert terminated and not truncated and reward == pytest.approx(0.95) and info["format_valid"]
    assert info["outcome"] == DialogueOutcome(accepted=True, accepted_at=3, turns=3,
                                              recommended=(wrong, task.target_item_id))
    assert info["ended_by"] == "accepted"
    with pytest.raises(RuntimeError):
        env.step(turn("wrap_up"))


def test_patience_ends_the_dialogue_after_that_many_rejections(world):
    env = make(world, simulator=RuleBasedSimulator(patience=2))
    task = world[1][0]
    env.reset(options={"task": task})
    first, second = wrong_ids(task, 2)
    assert not env.step(turn("recommend", ids=[first]))[2]
    observation, reward, terminated, truncated, info = env.step(turn("recommend", ids=[second]))
    assert terminated and not truncated and "Bye." in observation and info["ended_by"] == "user_left"
    assert info["outcome"] == DialogueOutcome(accepted=False, accepted_at=None, turns=2, recommended=(first, second))
    assert info["format_valid"] and reward == -0.05


def test_wrap_up_ends_the_dialogue_unaccepted(world):
    env = make(world)
    env.reset(options={"task": world[1][0]})
    _, _, terminated, _, info = env.step(turn("wrap_up", "Bye!"))
    assert terminated and info["ended_by"] == "wrap_up" and not info["outcome"].accepted


def test_turn_and_token_budgets_truncate_with_an_outcome(world):
    env = make(world, max_turns=3)
    env.reset(options={"task": world[1][0]})
    env.step(turn("ask_preference"))
    env.step(turn("ask_constraint"))
    _, reward, terminated, truncated, info = env.step(turn("ask_preference"))
    assert truncated and not terminated and info["ended_by"] == "turn_budget" and reward == -0.05
    assert info["outcome"] == DialogueOutcome(turns=3) and info["format_valid"] and info["errors"] == []
    env = make(world, max_episode_tokens=300)
    env.reset(options={"task": world[1][0]})
    _, _, _, truncated, info = env.step(turn("ask_preference", "word " * 300))
    assert truncated and info["ended_by"] == "token_budget" and info["outcome"].turns == 1


def test_narrow_restricts_the_candidate_set(world):
    env = make(world)
    task = world[1][0]
    env.reset(options={"task": task})
    [other, outside] = wrong_ids(task, 2)
    observation, _, _, _, info = env.step(turn("narrow", "Only these two.", [other, task.target_item_id]))
    assert set(info["candidate_item_ids"]) == {other, task.target_item_id} and info["errors"] == []
    assert f"Candidates (2): {', '.join(info['candidate_item_ids'])}" in observation
    observation, reward, _, _, info = env.step(turn("recommend", ids=[outside]))
    assert f"id '{outside}' is not in the current candidate set" in info["errors"]
    assert info["observation_role"] == "env" and observation.startswith("Error:") and reward == pytest.approx(-0.25)
    env.step(turn("narrow", "Tell me more about these."))  # narrowing in words only keeps the set
    assert set(env.step(turn("ask_preference"))[4]["candidate_item_ids"]) == {other, task.target_item_id}


@pytest.mark.parametrize(("text", "error", "answered"), [
    ("hello", "no <act> or <recommend> tag found", False),
    ("<act>dance</act><say>hi</say>", "unknown act 'dance'", False),
    ("<say>hi</say><recommend>{t}</recommend>", "no <act> tag", False),
    ("<act>recommend</act><say>hi</say>", "act recommend needs <recommend>id</recommend>", False),
    ("<act>recommend</act><say>hi</say><recommend></recommend>", "empty <recommend>", False),
    ("<act>recommend</act><say>hi</say><recommend>{w}, {w2}</recommend>", "2 ids recommended: only the first 1 were",
     True),
    ("<act>ask_preference</act><say>hi</say><recommend>{w}</recommend>", "<recommend> ids go with act recommend or "
     "narrow; they were ignored with ask_preference", True),
    ("<act>ask_preference</act>", "no <say>: every turn says something to the user", True),
    ("<act>ask_preference</act><act>wrap_up</act><say>hi</say>", "more than one <act> block", True),
    ("<act>ask_preference</act><say>hi</say><tool_call>{{}}</tool_call>", "<tool_call> is not used here", True),
])
def test_malformed_turns_are_reported_penalized_and_cost_a_turn(world, text, error, answered):
    env = make(world)
    task = world[1][0]
    env.reset(options={"task": task})
    first, second = wrong_ids(task, 2)
    observation, reward, terminated, truncated, info = env.step(text.format(t=task.target_item_id, w=first, w2=second))
    assert any(e.startswith(error) for e in info["errors"]), info["errors"]
    assert reward == pytest.approx(-0.25) and not terminated and not truncated and "Turns left: 7." in observation
    assert info["observation_role"] == ("user" if answered else "env")
    _, reward, terminated, _, info = env.step(turn("recommend", ids=[task.target_item_id]))
    assert terminated and info["outcome"].accepted and not info["format_valid"]  # a malformed turn taints the episode


def test_reward_constants_are_constructor_arguments(world):
    env = make(world, turn_reward=0.0, accept_reward=10.0, malformed_reward=-1.0)
    task = world[1][0]
    env.reset(options={"task": task})
    assert env.step("nonsense")[1] == -1.0
    assert env.step(turn("recommend", ids=[task.target_item_id]))[1] == 10.0


def test_a_seeded_reset_replays_a_noisy_dialogue(world):
    env = make(world, simulator=RuleBasedSimulator(noise=0.5))
    task = world[1][0]

    def replies(seed):
        env.reset(seed=seed, options={"task": task})
        return [env.step(turn("ask_preference"))[0] for _ in range(5)]

    assert replies(3) == replies(3)
    assert any("Hmm, I'm not sure." in reply for seed in range(4) for reply in replies(seed))


def test_ranking_tasks_and_foreign_ids_are_refused_with_the_fix(world, synthetic_catalog):
    env = make(world)
    with pytest.raises(ValueError, match="convert ranking tasks with envs.conversational.dialogue_task"):
        env.reset(options={"task": build_tasks(synthetic_catalog, num_negatives=9)[0]})
    task = world[1][0]
    with pytest.raises(ValueError, match="not among its candidates"):
        env.reset(options={"task": DialogueTask(task_id="x", user_id="1", history=(), candidate_item_ids=("1", "2"),
                                                target_item_id="3")})
    assert env.reset(options={"task": task})[1]["task"] == task


def test_metrics_over_outcomes():
    outcomes = [DialogueOutcome(accepted=True, accepted_at=2, turns=2, recommended=("5", "7")),
                DialogueOutcome(accepted=True, accepted_at=4, turns=4, recommended=("1", "2", "3", "9")),
                DialogueOutcome(turns=8, recommended=("4",))]
    targets = ["7", "9", "8"]
    assert success_rate(outcomes) == pytest.approx(2 / 3) and turns_to_acceptance(outcomes) == 3.0
    assert [recall_at_k(outcomes, targets, k) for k in (1, 2, 4)] == pytest.approx([0, 1 / 3, 2 / 3])
    metrics = dialogue_metrics(outcomes, targets, ks=(1, 5))
    assert sorted(metrics) == ["crs/recall@1", "crs/recall@5", "crs/success", "crs/turns_to_accept"]
    with pytest.raises(ValueError):
        recall_at_k(outcomes, targets[:2], 1)


def play(policy, catalog, tasks, **env_kwargs):
    envs = [make_env("ConversationalRec-v0", catalog=catalog, **env_kwargs) for _ in tasks]
    for seed, (env, task) in enumerate(zip(envs, tasks)):
        env.reset(seed=seed, options={"task": task})
    return run_episodes(policy, envs, [EpisodeRequest(task, seed=seed) for seed, task in enumerate(tasks)],
                        source=policy.role)


def test_per_turn_rewards_and_the_outcome_reach_the_trajectory(world):
    catalog, tasks = world
    [trajectory] = play(RuleBasedCRSPolicy(catalog), catalog, tasks[:1])
    agent_turns = [t for t in trajectory.turns if t.is_agent]
    assert trajectory.outcome.accepted and trajectory.terminated and trajectory.format_valid
    assert trajectory.outcome.turns == len(agent_turns) and trajectory.outcome.accepted_at == len(agent_turns)
    assert [t.reward for t in agent_turns] == pytest.approx([-0.05] * (len(agent_turns) - 1) + [0.95])
    assert {t.role for t in trajectory.turns if not t.is_agent} == {"system", "user"}
    assert agent_turns[0].action.act == "ask_preference"


def test_the_rule_based_policy_succeeds_far_more_often_than_random(synthetic_catalog):
    tasks = [dialogue_task(task) for task in build_tasks(synthetic_catalog, num_negatives=19, seed=0)]
    rates = {}
    for name, policy in {"rules": RuleBasedCRSPolicy(synthetic_catalog), "random": RandomCRSPolicy(),
                         "guess": RandomCRSPolicy(acts=("recommend",))}.items():
        trajectories = play(policy, synthetic_catalog, tasks)
        assert all(t.format_valid and t.outcome is not None for t in trajectories)
        rates[name] = success_rate([t.outcome for t in trajectories])
    # Measured: rules 0.60, random 0.05, guessing 0.22 over the 60 users.
    assert rates["rules"] >= 0.5
    assert rates["rules"] >= rates["random"] + 0.4 and rates["rules"] >= 2 * rates["guess"], rates
