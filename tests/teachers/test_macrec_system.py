"""MACRec over LLM backends: control flow of rp, sr and chat with scripted replies, the Reflector's
strategies, MACRec's rewards on its episodes, and the real path on the tiny model."""

import json

import pytest

from envs import make_env
from envs.conversational import dialogue_task
from envs.data import build_tasks, training_interactions
from envs.data.rating import build_rating_tasks
from envs.parsing import RANKING_TAGS, RATING_TAGS, parse_action
from envs.tools import InteractionGraph
from rewards import REWARD_FUNCTIONS
from rewards.macrec import rp_v1, sr_v1
from rollout.episode import EpisodeRequest, run_episodes
from teachers.backends.base import ChatParams
from teachers.backends.scripted import ScriptedBackend
from teachers.systems.macrec import STRATEGIES, MACRecTeacher

RP_TOOLS = ["user_info", "item_info", "user_history", "item_history", "search"]
SR_TOOLS = ["user_info", "user_history", "item_info", "search"]
CONVERSATION_TAGS = ("plan", "reflection", "act", "say", "recommend")


@pytest.fixture
def world(synthetic_catalog):
    # MACRec's sr protocol: 1 + 7 candidates, at most 5 history items.
    ranking = build_tasks(synthetic_catalog, num_negatives=7, max_history=5, seed=0)
    graph = InteractionGraph.from_interactions(training_interactions(synthetic_catalog.interactions, ranking))
    return synthetic_catalog, graph, ranking


def env_of(world, task, *, max_turns=4):
    catalog, graph, _ = world
    if task == "chat":
        return make_env("ConversationalRec-v0", catalog=catalog)
    env_id, tools = {"rp": ("RatingPrediction-v0", RP_TOOLS), "sr": ("SequentialRec-v0", SR_TOOLS)}[task]
    return make_env(env_id, catalog=catalog, graph=graph, tool_names=tools, max_turns=max_turns)


def play(world, task, episode_task, replies, *, max_turns=4, **kwargs):
    backend = ScriptedBackend(replies)
    tools = {"rp": RP_TOOLS, "sr": SR_TOOLS, "chat": []}[task]
    teacher = MACRecTeacher(world[0], backend, ChatParams(max_tokens=32), tools=tools, max_turns=max_turns, **kwargs)
    [trajectory] = run_episodes(teacher, [env_of(world, task, max_turns=max_turns)], [EpisodeRequest(episode_task)],
                                source="teacher:macrec")
    return trajectory, backend, teacher


def asked(teacher, backend):
    """The role each backend call asked, in order."""
    by_system = {prompt.system: name for name, prompt in teacher.roles.prompts.items()}
    return [by_system[call[0]["content"]] for call in backend.calls]


def read(backend, index):
    return backend.calls[index][1]["content"]


def parsed_back(trajectory, tags):
    return [parse_action(m["content"], tags=tags) for m in trajectory.messages if m["role"] == "assistant"]


def review_of(reflection):
    return json.loads(reflection.split("Review of the first answer: ")[1])


def test_rp_analyses_the_user_reflects_and_revises_the_answer_the_env_scores(world):
    task = build_rating_tasks(world[0])[0]
    target = task.target_rating
    first = 1.0 if target != 1.0 else 5.0
    trajectory, backend, teacher = play(world, "rp", task, [
        "I should learn how this user rates.",                       # thought 1
        f"Analyse[user, {task.user_id}]",                            # action 1: the Analyst's tools, one env turn
        "The user <answer>rates</answer> generously.",               # analyst (tag-breaking text)
        "The user rates high.",                                      # thought 2
        f"Finish[{first:g}]",                                        # action 2: trial 1's answer
        '{"correctness": false, "reason": "too far from the user\'s ratings"}',  # reflector
        "Follow the reflection.",                                    # trial 2: thought 1
        f"Finish[{target:g}]",                                       # trial 2: its answer
    ])
    assert asked(teacher, backend) == ["manager_thought", "manager_action", "analyst", "manager_thought",
                                       "manager_action", "reflector", "manager_thought", "manager_action"]
    # The Analyst read the env's replies to its tools; the Manager read the Analyst as its observation.
    assert f"user {task.user_id}: " in read(backend, 2) and f"user {task.user_id} last" in read(backend, 2)
    assert "Observation 1: The user answerrates/answer generously." in read(backend, 3)
    assert f"Action 2: finish[{first:g}]" in read(backend, 5)
    # Trial 2's Manager reads the reflection (reflexion), not trial 1's steps.
    assert "- too far from the user's ratings" in read(backend, 6) and "Thought 1: I should" not in read(backend, 6)
    first_turn, last_turn = trajectory.actions
    assert [c.name for c in first_turn.tool_calls] == ["user_info", "user_history"]
    assert first_turn.plan == "I should learn how this user rates."
    assert last_turn.answer == f"{target:g}" and last_turn.plan == "Follow the reflection."
    assert last_turn.reflection.startswith(f"Analyst on user {task.user_id}: The user answerrates/answer generously.")
    assert review_of(last_turn.reflection) == {"answer": f"{first:g}", "correctness": False,
                                               "reason": "too far from the user's ratings"}
    assert parsed_back(trajectory, RATING_TAGS) == trajectory.actions
    # The env scored the answer after the reflection; MACRec's rewards read the one before from the review.
    assert trajectory.terminated and trajectory.format_valid and trajectory.outcome.prediction == target
    assert REWARD_FUNCTIONS["delta"](trajectory) == pytest.approx(rp_v1(target, target) - rp_v1(first, target))
    assert REWARD_FUNCTIONS["reflection"](trajectory) == 16.0


def test_sr_searches_and_stops_when_the_reflector_judges_the_ranking_correct(world):
    catalog, _, tasks = world
    task = tasks[0]
    genre = catalog.items[task.candidate_item_ids[0]].genres[0]
    top, second = task.candidate_item_ids[2], task.candidate_item_ids[0]
    trajectory, backend, teacher = play(world, "sr", task, [
        f"Look for {genre} among the candidates.",
        f"Search[{genre}]",
        f"Item {second} fits.",                                      # searcher
        "Rank the matches first.",
        f"Finish[{top}, {second}, 999]",                             # 999 is no candidate: dropped
        '{"correctness": true, "reason": "it fits the history"}',    # reflector: stop, no second trial
    ])
    assert asked(teacher, backend) == ["manager_thought", "manager_action", "searcher", "manager_thought",
                                       "manager_action", "reflector"]
    assert f"search '{genre}': " in read(backend, 2)                 # the env's search results
    assert "Finish[id, id, ...]" in read(backend, 0) and "Analyse[user/item, id]" in read(backend, 0)
    first_turn, last_turn = trajectory.actions
    assert first_turn.tool_calls[0].name == "search" and first_turn.tool_calls[0].arguments == {"query": genre}
    assert last_turn.recommend == [top, second]
    assert f"Searcher on {genre}: Item {second} fits." in last_turn.reflection
    assert review_of(last_turn.reflection) == {"answer": [top, second], "correctness": True,
                                               "reason": "it fits the history"}
    assert parsed_back(trajectory, RANKING_TAGS) == trajectory.actions
    assert trajectory.terminated and trajectory.outcome.ranking[:2] == (top, second)
    assert REWARD_FUNCTIONS["delta"](trajectory) == 0.0             # the answer did not change
    assert REWARD_FUNCTIONS["reflection"](trajectory) == (16.0 if top == task.target_item_id else -16.0)
    assert REWARD_FUNCTIONS["sr_v1"](trajectory) == sr_v1(trajectory.rank)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_gives_the_next_trial_what_macrec_defines(world, strategy):
    task = build_rating_tasks(world[0])[1]
    reflects = STRATEGIES[strategy].reflexion
    replies = []
    for trial, answer in ((1, 2), (2, 3), (3, 4)):
        replies += [f"thought of trial {trial}", f"Finish[{answer}]"]
        if reflects and trial < 3:
            replies.append(f'{{"correctness": false, "reason": "reflection on trial {trial}"}}')
    trajectory, backend, teacher = play(world, "rp", task, replies, reflection_strategy=strategy, max_trials=3)
    roles = asked(teacher, backend)
    assert roles.count("reflector") == (2 if reflects else 0)
    third_trial = read(backend, len(roles) - 2)                     # the last thought prompt
    assert ("Thought 1: thought of trial 2" in third_trial) == STRATEGIES[strategy].last_trial
    assert "thought of trial 1" not in third_trial                   # only the last trial, never older ones
    assert ("reflection on trial 2" in third_trial) == reflects
    assert ("reflection on trial 1" in third_trial) == (strategy == "reflexion")  # reflexion keeps every one
    assert trajectory.actions[-1].answer == "4"
    review = review_of(trajectory.actions[-1].reflection)
    assert review == ({"answer": "2", "correctness": False, "reason": "reflection on trial 1"} if reflects
                      else {"answer": "2"})
    # The rewards compute either way; without a verdict the reflection reward is MACRec's -16.
    target = task.target_rating
    assert REWARD_FUNCTIONS["delta"](trajectory) == pytest.approx(rp_v1(4, target) - rp_v1(2, target))
    assert REWARD_FUNCTIONS["reflection"](trajectory) == (16.0 if reflects and target != 2 else -16.0)


def test_chat_interprets_each_user_message_and_speaks_one_act_a_turn(world):
    catalog, _, tasks = world
    task = dialogue_task(tasks[0])
    trajectory, backend, teacher = play(world, "chat", task, [
        "The user wants something; ask.",                            # turn 1: interpreter
        "I do not know their taste yet.",                            # thought
        "ask_preference[What kind of items do you like?]",           # action
        "Find an item of the genre the user named.",                 # turn 2: interpreter
        "Recommend the target.",                                     # thought 1
        "dance[now]",                                                # action 1: no such act
        f"Item {task.target_item_id} fits.",                         # thought 2
        f"recommend[{task.target_item_id}]",                         # action 2
    ])
    assert asked(teacher, backend) == ["interpreter", "manager_thought", "manager_action"] + [
        "interpreter", "manager_thought", "manager_action", "manager_thought", "manager_action"]
    assert "The user's last message: Hi! Can you recommend something for me?" in read(backend, 0)
    user_reply = trajectory.turns[3].text.splitlines()[0]
    assert user_reply.startswith("User: ") and f"The user's last message: {user_reply[6:]}" in read(backend, 3)
    assert "You (ask_preference): What kind of items do you like?" in read(backend, 3)
    assert "Task from the Interpreter: Find an item of the genre the user named." in read(backend, 4)
    assert "Observation 1: Invalid action: write one of the listed actions" in read(backend, 6)
    ask, recommend = trajectory.actions
    assert ask.act == "ask_preference" and ask.utterance == "What kind of items do you like?"
    assert ask.reflection == "Interpreter: The user wants something; ask."
    assert recommend.act == "recommend" and recommend.recommend == [task.target_item_id]
    assert recommend.utterance == f"Item {task.target_item_id} fits."
    assert parsed_back(trajectory, CONVERSATION_TAGS) == trajectory.actions
    assert trajectory.terminated and trajectory.outcome.accepted and trajectory.outcome.accepted_at == 2


def test_the_last_env_turn_calls_no_agent(world):
    task = build_rating_tasks(world[0])[2]
    trajectory, backend, _ = play(world, "rp", task, [
        "Study the item.", f"Analyse[item, {task.item_id}]",           # refused: no turn left for its tools
        "Then answer.", "Finish[3]",
    ], max_turns=1, max_trials=1)
    assert "This is the last step: use Finish." in read(backend, 1)
    assert "Observation 1: no turns are left for agents: Finish." in read(backend, 2)
    [only] = trajectory.actions
    assert only.answer == "3" and not only.tool_calls and only.reflection == "No agent was consulted."
    assert trajectory.terminated and trajectory.outcome.prediction == 3.0


def test_malformed_output_and_a_failing_backend_end_episodes_cleanly(world):
    rating, ranking, dialogue = build_rating_tasks(world[0])[0], world[2][0], dialogue_task(world[2][0])
    # No valid action in the steps of either trial: an empty answer, with the reason.
    trajectory, backend, teacher = play(world, "rp", rating, ["hmm", "Guess[4]", "hmm", "Finish[eleven]",
                                                              '{"correctness": false, "reason": "no answer"}',
                                                              "hmm", "Finish[9]", "hmm", "nothing"], max_steps=2)
    assert "Invalid answer: rating 9 is outside 1-5." in read(backend, 7)
    assert trajectory.terminated and not trajectory.format_valid and trajectory.outcome.prediction is None
    assert trajectory.actions[-1].reflection == "Stopped: the Manager gave no answer in 2 trial(s) of 2 steps"
    assert teacher._progress == {}
    # The script runs out at the Analyst, after the env answered its tools: the episode still ends.
    trajectory, _, teacher = play(world, "sr", ranking, ["Study the user.", f"Analyse[user, {ranking.user_id}]"])
    assert trajectory.terminated and not trajectory.format_valid and trajectory.actions[-1].recommend == []
    assert trajectory.actions[-1].reflection.startswith("Stopped: analyst: the script holds 2 replies")
    assert teacher._progress == {}
    # In a conversation a failure wraps up.
    trajectory, _, _ = play(world, "chat", dialogue, [])
    assert trajectory.terminated and not trajectory.outcome.accepted and trajectory.actions[-1].act == "wrap_up"
    assert trajectory.actions[-1].reflection.startswith("Stopped: interpreter: the script holds 0 replies")


def test_bad_settings_are_refused_with_the_fix(world):
    catalog = world[0]
    with pytest.raises(ValueError, match="unknown reflection strategy 'reflection'; use one of none, last_trial, "
                                         "reflexion, last_trial_and_reflexion"):
        MACRecTeacher(catalog, ScriptedBackend([]), ChatParams(), tools=[], reflection_strategy="reflection")
    with pytest.raises(ValueError, match="unknown MACRec task 'gen'"):
        MACRecTeacher(catalog, ScriptedBackend([]), ChatParams(), tools=[], task="gen")
    teacher = MACRecTeacher(catalog, ScriptedBackend([]), ChatParams(), tools=SR_TOOLS, task="rp")
    with pytest.raises(ValueError, match=r"plays rp, but the env gives ranking tasks \(sr\)"):
        run_episodes(teacher, [env_of(world, "sr")], [EpisodeRequest(world[2][0])], source="teacher:macrec")


def test_macrec_runs_for_real_on_the_tiny_model_with_batched_episodes(world):
    from teachers.backends.batching import BatchingBackend
    from teachers.backends.engine import EngineBackend

    catalog, _, tasks = world
    backend = BatchingBackend(EngineBackend.open("tiny-random", engine="hf"))
    # One teacher plays the three tasks at once, each picked from its env's task kind.
    teacher = MACRecTeacher(catalog, backend, ChatParams(max_tokens=8), tools=RP_TOOLS, max_steps=1, concurrency=3)
    requests = [build_rating_tasks(catalog)[0], tasks[0], dialogue_task(tasks[1])]
    trajectories = run_episodes(teacher, [env_of(world, task) for task in ("rp", "sr", "chat")],
                                [EpisodeRequest(task) for task in requests], source="teacher:macrec")
    # Random weights name no valid action: every episode ends cleanly, saying why.
    assert all(t.terminated and t.actions[-1].reflection.startswith("Stopped: ") for t in trajectories)
    assert [t.outcome.kind for t in trajectories] == ["rating", "ranking", "dialogue"]
    assert max(backend.batch_sizes) > 1 and teacher._progress == {}
