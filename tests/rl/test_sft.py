"""SFT data: seeded samples, whole episodes only, and the loop's bookkeeping."""

import pytest

from envs.types import Trajectory, Turn
from rl.sft import SFTConfig, sft_examples, train_sft
from rollout.chat import ChatFormat


def trajectory(answer: str) -> Trajectory:
    turns = [Turn("system", "s"), Turn("user", "u"), Turn("cf_expert", answer)]
    return Trajectory(task_id=answer, env_id="e", source="teacher", turns=turns)


def test_examples_are_a_seeded_sample_of_whole_episodes(tiny_tokenizer):
    chat = ChatFormat(tiny_tokenizer)
    pool = [trajectory(f"<recommend>{i}</recommend>") for i in range(10)] + [trajectory("x " * 500)]
    first = sft_examples(pool, chat, max_seq_len=64, max_examples=5, seed=1)
    assert first == sft_examples(pool, chat, max_seq_len=64, max_examples=5, seed=1)
    assert len(first) == 5 and all(len(ids) <= 64 and any(mask) for ids, mask in first)
    everything = sft_examples(pool, chat, max_seq_len=64, max_examples=100, seed=1)
    assert len(everything) == 10  # the over-long episode is skipped, never cut
    with pytest.raises(ValueError, match="no SFT example fits"):
        sft_examples(pool[-1:], chat, max_seq_len=64, max_examples=5, seed=1)


def test_train_sft_runs_every_batch_of_every_epoch():
    class CountingLearner:
        def __init__(self):
            self.batches = []

        def sft_step(self, sequences, masks):
            self.batches.append(len(sequences))
            return {"train/loss": 1.0 / len(self.batches)}

    learner = CountingLearner()
    logged = []
    losses = train_sft(learner, [([1, 2], [0, 1])] * 5, SFTConfig(epochs=2, batch_size=2), seed=0,
                       log=lambda metrics, step: logged.append(step))
    assert learner.batches == [2, 2, 1, 2, 2, 1]
    assert losses == [1.0 / n for n in range(1, 7)] and logged == [1, 2, 3, 4, 5, 6]


def test_a_role_puts_the_loss_on_its_own_turns_and_leaves_the_others_as_context(tiny_tokenizer):
    chat = ChatFormat(tiny_tokenizer)
    turns = [Turn("system", "s"), Turn("user", "u"), Turn("planner", "<plan>P</plan>"), Turn("tool", ""),
             Turn("caller", "<tool_call>C</tool_call>"), Turn("tool", "r")]
    episode = Trajectory(task_id="a", env_id="e", source="teacher", turns=turns)
    only_planner = Trajectory(task_id="b", env_id="e", source="teacher", turns=turns[:4])
    [(ids, whole)] = sft_examples([episode], chat, max_seq_len=256, max_examples=5, seed=0)
    [(same_ids, caller)] = sft_examples([episode, only_planner], chat, max_seq_len=256, max_examples=5, seed=0,
                                        role="caller")  # the episode without a caller turn is skipped
    assert same_ids == ids
    caller_span = chat.encode("<tool_call>C</tool_call>") + [chat.end_of_turn_id]
    trained = [token for token, flag in zip(ids, caller) if flag]
    assert trained == caller_span and sum(whole) == sum(caller) + len(chat.encode("<plan>P</plan>")) + 1
    with pytest.raises(ValueError, match="no SFT example with a turn of role 'summarizer'"):
        sft_examples([episode], chat, max_seq_len=256, max_examples=5, seed=0, role="summarizer")
