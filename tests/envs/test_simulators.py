"""Tests for the user simulators: truthful rule-based answers, patience and noise, the facts a
rule-based agent reads back, and the LLM simulator's guard against revealing its target."""

from dataclasses import dataclass

import numpy as np
import pytest

from envs import make_env
from envs.simulators import AgentMove, Dialogue, LLMSimulator, RuleBasedSimulator, judge, leak
from envs.simulators.facts import Fact, item_facts, read_facts, say
from envs.types import Catalog, DialogueTask, Item

ITEMS = [Item("50", "Star Wars (1977)", "1977", ("Action", "Sci-Fi", "War")),
         Item("448", "Omen, The", "1976", ("Horror",)),
         Item("102", "Aristocats, The", "1970", ("Animation", "Children's")),
         Item("7", "Film Noir Nights", "", ("Film-Noir",))]
CATALOG = Catalog("tiny", {}, {item.item_id: item for item in ITEMS}, [])
GENRES = sorted({genre for item in ITEMS for genre in item.genres})


def dialogue(target="50", seed=0):
    task = DialogueTask(task_id="t", user_id="u", history=(), candidate_item_ids=tuple(CATALOG.items),
                        target_item_id=target)
    return Dialogue(task, CATALOG, np.random.default_rng(seed), list(task.candidate_item_ids))


def ask(simulator, d, act, utterance="?", ids=()):
    move = AgentMove(act, utterance, tuple(ids))
    d.moves.append(move)
    reply = simulator.reply(d, move)
    d.replies.append(reply.text)
    if act == "recommend" and not reply.accepted:
        d.rejected += ids
    return reply


def test_preferences_come_from_the_targets_genres_then_its_title_words():
    simulator, d = RuleBasedSimulator(), dialogue("50")
    texts = [ask(simulator, d, "ask_preference").text for _ in range(6)]
    assert texts == ["I'd like something Action.", "I'd like something Sci-Fi.", "I'd like something War.",
                     "The title has the word 'Star' in it.", "The title has the word 'Wars' in it.",
                     "That's all I can tell you about what I like."]
    texts = [ask(simulator, d, "ask_constraint").text for _ in range(3)]
    assert texts == ["Something from the 1970s.", "It came out in 1977.", "No other constraints."]
    assert ask(simulator, dialogue("7"), "ask_constraint").text == "Any year is fine."


def test_a_user_who_states_only_some_attributes():
    simulator, d = RuleBasedSimulator(attributes=("genre",)), dialogue("448")
    assert [ask(simulator, d, "ask_preference").text for _ in range(2)] == [
        "I'd like something Horror.", "That's all I can tell you about what I like."]
    assert ask(simulator, d, "ask_constraint", "From 1976?").text == "Any year is fine."
    assert ask(simulator, d, "recommend", ids=["7"]).text == "No, not that one. I don't want anything Film-Noir."
    with pytest.raises(ValueError, match="unknown attribute"):
        RuleBasedSimulator(attributes=("mood",))


def test_named_attributes_are_confirmed_or_denied_truthfully():
    simulator = RuleBasedSimulator()
    reply = ask(simulator, dialogue("448"), "ask_preference", "Horror or Film-Noir, from the 1990s? 'Omen' in it?")
    assert reply.text == ("I don't want anything Film-Noir. I'd like something Horror. Not from the 1990s. "
                          "The title has the word 'Omen' in it.")
    assert ask(simulator, dialogue("448"), "narrow", "Let's look at 1976 ones.").text == "It came out in 1976."


def test_acceptance_rejection_reasons_clarification_and_patience():
    simulator, d = RuleBasedSimulator(patience=3), dialogue("50")
    assert ask(simulator, d, "clarify_rejection").text == "You haven't recommended anything yet."
    reply = ask(simulator, d, "recommend", "Try it", ["448"])
    assert not reply.accepted and not reply.left and reply.text == "No, not that one. I'd like something Action."
    assert ask(simulator, d, "clarify_rejection").text == "I'd like something Sci-Fi."  # the next unstated difference
    reply = ask(simulator, d, "recommend", "Try it", ["102"])
    assert not reply.left
    reply = ask(simulator, d, "recommend", "Try it", ["7"])
    assert reply.left and reply.text.endswith("I'll look elsewhere. Bye.")
    assert ask(simulator, dialogue("50"), "recommend", "Star Wars!", ["448", "50"]).accepted
    assert ask(simulator, dialogue("50"), "wrap_up").left
    with pytest.raises(ValueError, match="patience"):
        RuleBasedSimulator(patience=0)


def test_noise_gives_uninformative_answers_drawn_from_the_dialogues_seed():
    always = RuleBasedSimulator(noise=1.0)
    assert ask(always, dialogue("50"), "ask_preference").text == "Hmm, I'm not sure."
    assert ask(always, dialogue("50"), "recommend", ids=["448"]).text == "No, not that one."
    assert ask(always, dialogue("50"), "recommend", ids=["50"]).accepted  # noise never changes the verdict
    half = RuleBasedSimulator(noise=0.5)

    def answers(seed):
        d = dialogue("50", seed)
        return [ask(half, d, "ask_preference").text for _ in range(8)]

    assert answers(1) == answers(1) and answers(1) != answers(2)
    assert "Hmm, I'm not sure." in answers(1) and any(text.startswith("I'd like") for text in answers(1))


@pytest.mark.parametrize("item", ITEMS, ids=lambda item: item.title)
def test_every_stated_fact_is_read_back(item):
    for fact in item_facts(item):
        for stated in (fact, Fact(fact.attribute, fact.value, holds=False)):
            assert read_facts(say(stated), GENRES) == [stated]
    assert read_facts("No, not that one. Hmm, I'm not sure.", GENRES) == []


def test_judge_accepts_exactly_the_target():
    d = dialogue("50")
    assert judge(d, AgentMove("recommend", item_ids=("448", "50")), patience=1).accepted
    verdict = judge(d, AgentMove("recommend", item_ids=("448",)), patience=1)
    assert verdict.rejected and verdict.left and not verdict.accepted
    assert judge(d, AgentMove("ask_preference", "Is it 50?"), patience=1) == judge(d, AgentMove("narrow"), patience=1)


# The LLM simulator ----------------------------------------------------------------------------------


@dataclass
class ScriptedBackend:
    """Returns its replies in turn (the last one forever) and records every prompt."""

    replies: list[str]

    def __post_init__(self):
        self.prompts = []

    def __call__(self, messages):
        self.prompts.append(messages)
        return self.replies[min(len(self.prompts) - 1, len(self.replies) - 1)]


@pytest.mark.parametrize("leaking", ["I want Star Wars (1977).", "Something like STAR-WARS please", "It's item 50.",
                                     "id=50", "star wars"])
def test_a_leaking_llm_is_retried_then_replaced_by_a_safe_reply(leaking):
    backend = ScriptedBackend([leaking])
    simulator = LLMSimulator(backend, max_retries=2)
    reply = ask(simulator, dialogue("50"), "ask_preference", "What do you like?")
    assert len(backend.prompts) == 3 and reply.text == "Hmm, I'm not sure."
    assert (simulator.generations, simulator.leaks, simulator.safe_replies) == (3, 3, 1)
    assert backend.prompts[1][-1]["content"].startswith("Your reply named the item you want")
    assert "Star Wars (1977)" in backend.prompts[0][0]["content"]  # the prompt holds the hidden target
    d = dialogue("50")
    reply = ask(simulator, d, "recommend", "This one", ["50"])
    assert reply.accepted and reply.text == "Yes, that's the one I want. Thanks!"
    reply = ask(LLMSimulator(backend, patience=1, max_retries=0), dialogue("50"), "recommend", "This", ["448"])
    assert reply.left and not reply.accepted and reply.text == "No, not that one. I'll look elsewhere. Bye."


def test_a_clean_retry_is_kept_and_the_verdict_is_the_rules():
    backend = ScriptedBackend(["The Omen, obviously.", "Something scary from the seventies."])
    simulator = LLMSimulator(backend)
    d = dialogue("448")
    assert simulator.opening(d) == "Something scary from the seventies."
    assert (simulator.generations, simulator.leaks, simulator.safe_replies) == (2, 1, 0)
    reply = ask(simulator, d, "recommend", "How about this?", ["50"])
    # The words come from the LLM, the verdict from the rules.
    assert reply.text == "Something scary from the seventies." and not reply.accepted
    last = backend.prompts[-1][-1]["content"]
    assert "[recommends: Star Wars (1977) (1977; Action, Sci-Fi, War)]" in last and "turn it down" in last


def test_the_leak_check_knows_the_forms_of_a_title():
    omen, aristocats = CATALOG.items["448"], CATALOG.items["102"]
    assert leak("maybe the omen?", omen) and leak("Omen, The", omen) and leak("I mean 448.", omen)
    assert leak("An omen of good things", omen) is None and leak("I want 4480 things", omen) is None
    assert leak("THE ARISTOCATS!!", aristocats) and leak("cats with class", aristocats) is None


def test_an_llm_simulator_over_an_engine():
    class Tokenizer:
        def decode(self, ids, skip_special_tokens=True):
            return "".join(chr(i) for i in ids)

    class Chat:
        tokenizer = Tokenizer()

        def prompt_ids(self, messages):
            return [ord(c) for c in messages[-1]["content"][:5]]

    @dataclass
    class Generation:
        token_ids: list

    class Engine:
        def __init__(self):
            self.calls = []

        def generate(self, prompts, params, *, seeds=None):
            self.calls.append((prompts, params, seeds))
            return [Generation([ord(c) for c in "Star Wars, of course"])]

    engine = Engine()
    simulator = LLMSimulator.from_engine(engine, Chat(), params="sampling", max_retries=1)
    reply = ask(simulator, dialogue("50"), "ask_preference", "What do you like?")
    assert reply.text == "Hmm, I'm not sure." and len(engine.calls) == 2
    assert engine.calls[0][1] == "sampling" and len(engine.calls[0][2]) == 1


def test_in_the_env_no_observation_reveals_the_target(synthetic_catalog):
    from envs.conversational import dialogue_task
    from envs.data import build_tasks

    task = dialogue_task(build_tasks(synthetic_catalog, num_negatives=9)[0])
    title = synthetic_catalog.items[task.target_item_id].title
    backend = ScriptedBackend([f"I want {title}!", f"It's {task.target_item_id}", "Something cozy."])
    env = make_env("ConversationalRec-v0", catalog=synthetic_catalog, simulator=LLMSimulator(backend, max_retries=1))
    observation, _ = env.reset(seed=0, options={"task": task})
    replies = [observation.split("User: ")[-1]]
    for text in ("<act>ask_preference</act><say>What do you like?</say>",
                 "<act>ask_constraint</act><say>When from?</say>"):
        observation, *_ = env.step(text)
        replies.append(observation)
    assert all(title not in reply and leak(reply.split("\nCandidates")[0], synthetic_catalog.items[task.target_item_id])
               is None for reply in replies)
