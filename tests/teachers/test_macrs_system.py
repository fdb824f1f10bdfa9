"""MACRS over LLM backends: control flow with scripted replies, the real path on the tiny model."""

import pytest

from envs import make_env
from envs.conversational import CONVERSATION_TAGS, dialogue_task
from envs.data import build_tasks
from envs.parsing import parse_action
from rollout.episode import EpisodeRequest, run_episodes
from teachers.backends.base import ChatParams
from teachers.backends.scripted import ScriptedBackend
from teachers.crs_policies import ASKS
from teachers.systems.macrs import STOP_SAY, MACRSTeacher


@pytest.fixture
def world(synthetic_catalog):
    tasks = [dialogue_task(task) for task in build_tasks(synthetic_catalog, num_negatives=9, seed=0)]
    return synthetic_catalog, tasks


def play(world, task, replies, **kwargs):
    catalog, _ = world
    backend = ScriptedBackend(replies)
    teacher = MACRSTeacher(catalog, backend, ChatParams(max_tokens=32), **kwargs)
    env = make_env("ConversationalRec-v0", catalog=catalog)
    [trajectory] = run_episodes(teacher, [env], [EpisodeRequest(task)], source="teacher:macrs")
    return trajectory, teacher, backend


def asked(teacher, backend):
    """The role of every call, from its system message."""
    by_system = {prompt.system: role for role, prompt in teacher.roles.prompts.items()}
    return [by_system[call[0]["content"]] for call in backend.calls]


def assert_turns_parse_back(trajectory):
    agent_texts = [turn.text for turn in trajectory.turns if turn.is_agent]
    parsed = [parse_action(text, tags=CONVERSATION_TAGS) for text in agent_texts]
    assert parsed == trajectory.actions and not trajectory.errors


def test_roles_take_turns_the_lesson_reaches_the_planner_and_the_user_accepts(world):
    catalog, tasks = world
    task = tasks[0]
    target = task.target_item_id
    wrong = next(i for i in task.candidate_item_ids if i != target)
    trajectory, teacher, backend = play(world, task, [
        # Turn 1: the shortlist, two drafts (one invents an id), the planner picks the wrong recommendation.
        "recommend, then ask_preference",
        f"<recommend>{wrong}, 999</recommend> It fits <say>your</say> taste.",
        "What kind of item do you like?",
        "recommend: we have a strong guess.",
        # Turn 2: the rejection is reflected on; the planner chooses to clarify.
        "Learned: not that one. Strategy: ask why before recommending again.",
        "clarify_rejection and recommend",
        "What was wrong with it?",
        f"<recommend>{target}</recommend> Maybe this.",
        "Clarify_rejection, as the lesson says.",
        # Turn 3: one act shortlisted, so no planner call: the target is recommended and accepted.
        "recommend",
        f"<recommend>{target}</recommend> It matches what you said.",
    ])
    assert asked(teacher, backend) == ["shortlist", "recommend", "ask_preference", "planner",
                                       "reflection", "shortlist", "clarify_rejection", "recommend", "planner",
                                       "shortlist", "recommend"]
    assert trajectory.outcome.accepted and trajectory.outcome.accepted_at == 3 and trajectory.format_valid
    first, second, third = trajectory.actions
    # The invented id is dropped and the draft's stray tag cannot break the turn.
    assert (first.act, first.recommend, first.utterance) == ("recommend", [wrong], "It fits sayyour/say taste.")
    assert first.plan == "recommend: we have a strong guess. Act: recommend." and first.reflection is None
    # The planner read both drafts, the candidates and the turns left.
    planner_prompt = backend.calls[3][1]["content"]
    assert f"- recommend [{wrong}]: It fits" in planner_prompt and "- ask_preference: What kind" in planner_prompt
    assert "Turns left: 8" in planner_prompt and f"Candidates left ({len(task.candidate_item_ids)})" in planner_prompt
    # The reflection ran on the rejection, with the turned-down item; its lesson reaches the planner.
    reflection_prompt = backend.calls[4][1]["content"]
    assert f"Setback: The user turned down {wrong} {catalog.items[wrong].title}" in reflection_prompt
    assert "User: No, not that one." in reflection_prompt
    lesson = "Learned: not that one. Strategy: ask why before recommending again."
    assert second.reflection == lesson and f"Lessons: {lesson}" in backend.calls[8][1]["content"]
    assert "clarify_rejection" in backend.calls[5][1]["content"]  # usable after a rejection
    assert (second.act, second.recommend) == ("clarify_rejection", None)
    # Later turns still read the lesson (from the trajectory); the rejected item left the candidates.
    assert f"Lessons: {lesson}" in backend.calls[9][1]["content"]
    assert f"\n{wrong} " not in backend.calls[9][1]["content"]
    assert (third.act, third.recommend) == ("recommend", [target])
    assert third.plan == "Act: recommend (the only usable draft)."
    assert_turns_parse_back(trajectory)


def test_max_drafts_covering_every_usable_act_skips_the_shortlist(world):
    _, tasks = world
    task = tasks[1]
    trajectory, teacher, backend = play(world, task, [
        "What do you like?", "Any era?", f"<recommend>{task.target_item_id}</recommend> Keep these.",
        f"<recommend>{task.target_item_id}</recommend> Try it.", "recommend",
    ], max_drafts=6)
    assert asked(teacher, backend) == ["ask_preference", "ask_constraint", "narrow", "recommend", "planner"]
    assert trajectory.outcome.accepted and trajectory.actions[0].plan == "recommend Act: recommend."


def test_malformed_output_and_invented_ids_fall_back_and_a_failing_backend_wraps_up(world):
    _, tasks = world
    task = tasks[2]
    trajectory, teacher, backend = play(world, task, [
        # Turn 1: the shortlist names no act (the default two are drafted); one draft is empty.
        "I cannot decide.", "", "Any era in mind?",
        # Turn 2: both drafts name only invented ids: no usable draft, the turn asks by itself.
        "narrow, recommend", "<recommend>999, 998</recommend> Kept.", "<recommend>999</recommend> Great pick.",
        # Turn 3: the planner names no drafted act: the first draft is taken.
        "ask_preference, recommend", "Which genre?", f"<recommend>{task.target_item_id}</recommend> Here.", "hmm",
        # Turn 4: the script runs out (a backend failure) at the shortlist.
    ])
    assert asked(teacher, backend) == ["shortlist", "ask_preference", "ask_constraint",
                                       "shortlist", "narrow", "recommend",
                                       "shortlist", "ask_preference", "recommend", "planner"]
    first, second, third, last = trajectory.actions
    assert first.act == "ask_constraint" and first.plan == (
        "Fallback: the shortlist named no usable act; drafting ask_preference, ask_constraint. "
        "Fallback: the ask_preference draft said nothing. Act: ask_constraint (the only usable draft).")
    assert (second.act, second.utterance) == ("ask_preference", ASKS["ask_preference"])
    assert "the narrow draft named no current candidate" in second.plan and "no usable draft" in second.plan
    assert third.act == "ask_preference" and "the planner named no drafted act" in third.plan
    assert (last.act, last.utterance) == ("wrap_up", STOP_SAY)
    assert last.plan.startswith("Stopped: shortlist: the script holds 10 replies")
    assert trajectory.terminated and trajectory.format_valid and not trajectory.outcome.accepted
    assert_turns_parse_back(trajectory)


def test_a_stalling_dialogue_is_reflected_on(world):
    _, tasks = world
    # Synthetic items have no year: asking for limits twice gets the same answer twice.
    trajectory, teacher, backend = play(world, tasks[3], [
        "ask_constraint", "Any era?", "ask_constraint", "Which years?",
        "Learned: any era is fine. Strategy: ask about genres.",
    ], max_drafts=1)
    assert asked(teacher, backend) == ["shortlist", "ask_constraint", "shortlist", "ask_constraint", "reflection"]
    assert "Setback: The user repeated an earlier answer" in backend.calls[4][1]["content"]
    last = trajectory.actions[-1]
    # The reflection's lesson is kept in the turn that stops on the backend failure.
    assert last.reflection == "Learned: any era is fine. Strategy: ask about genres." and last.act == "wrap_up"
    assert_turns_parse_back(trajectory)


def test_macrs_runs_for_real_on_the_tiny_model_with_batched_dialogues(world):
    from teachers.backends.batching import BatchingBackend
    from teachers.backends.engine import EngineBackend

    catalog, tasks = world
    backend = BatchingBackend(EngineBackend.open("tiny-random", engine="hf"))
    # One draft a turn and two turns keep the CPU's share small: a shortlist and a draft, then the last
    # turn's recommendation (three batched calls).
    teacher = MACRSTeacher(catalog, backend, ChatParams(max_tokens=8), max_drafts=1, concurrency=2)
    envs = [make_env("ConversationalRec-v0", catalog=catalog, max_turns=2) for _ in range(2)]
    trajectories = run_episodes(teacher, envs, [EpisodeRequest(t) for t in tasks[:2]], source="teacher:macrs")
    # Random weights write no plan worth reading: every dialogue still ends cleanly within its budget.
    assert all((t.terminated or t.truncated) and t.outcome is not None for t in trajectories)
    assert all(len(t.actions) <= 2 for t in trajectories)
    assert max(backend.batch_sizes) > 1
    for trajectory in trajectories:
        assert_turns_parse_back(trajectory)
