"""Credit from the episodes themselves: per turn, and per recommended item (Rank-GRPO)."""

import pytest
import torch

from envs.parsing import parse_action
from envs.types import RankingOutcome, Trajectory, Turn
from rl.episode_credit import INVALID_ITEM, item_relevance, item_token_spans, rank_credit, turn_credit
from rl.grpo import GRPOConfig
from rollout.chat import ChatFormat


def test_turn_credit_gives_each_turn_its_return_normalised_among_the_groups_turns_at_that_index():
    def episode(spans, env_rewards, reward):
        """Agent turns at ``spans`` (each followed by a 2-token env reply), after a 3-token prompt."""
        turns = [Turn("user", "prompt", 0, 3)]
        for (start, end), env_reward in zip(spans, env_rewards):
            turns += [Turn("policy", "act", start, end, env_reward), Turn("tool", "reply", end, end + 2)]
        length = turns[-1].end
        mask = [int(any(start <= i < end for start, end in spans)) for i in range(length)]
        return Trajectory(task_id="t", env_id="e", source="s", group_id="g", turns=turns, reward=reward,
                          token_ids=list(range(length)), loss_mask=mask)

    two_turns = episode([(3, 5), (7, 9)], [0.0, 0.5], reward=2.0)  # turn rewards 0 and 0.5 + 1.5
    one_turn = episode([(3, 6)], [0.2], reward=1.0)
    advantages = turn_credit([two_turns, one_turn], env_weight=1.0, gamma=1.0, scale_by_std=True, width=12)
    # Turn 0: returns 2.0 and 1.0, so +1 and -1; turn 1: only one episode has it, so 0.
    expected = torch.zeros(2, 12)
    expected[0, 3:5], expected[1, 3:6] = 1.0, -1.0
    assert torch.allclose(advantages, expected, atol=1e-5), advantages
    # With no env reward weight every turn's return is the episode's reward, and turn 1 still stands alone.
    advantages = turn_credit([two_turns, one_turn], env_weight=0.0, gamma=1.0, scale_by_std=True, width=12)
    assert torch.allclose(advantages, expected, atol=1e-5)
    with pytest.raises(ValueError, match="credit=turn"):
        GRPOConfig(credit="turn", advantage_estimator="reinforce_pp")
    with pytest.raises(ValueError, match="credit"):
        GRPOConfig(credit="position")


def ranked_episode(chat, answer, ranking, rank, group="g"):
    """A one-turn episode whose policy sampled ``answer`` (a ``<recommend>`` list) for a prompt."""
    prompt = chat.prompt_ids([{"role": "user", "content": "rank them"}])
    sampled = chat.tokenizer.encode(answer, add_special_tokens=False)
    turns = [Turn("user", "rank them", 0, len(prompt)),
             Turn("policy", answer, len(prompt), len(prompt) + len(sampled), action=parse_action(answer))]
    return Trajectory(task_id="t", env_id="e", source="s", group_id=group, turns=turns,
                      outcome=RankingOutcome(ranking=tuple(ranking), rank=rank), token_ids=prompt + sampled,
                      loss_mask=[0] * len(prompt) + [1] * len(sampled))


def test_rank_credit_gives_each_listed_item_its_positions_advantage(tiny_tokenizer):
    chat = ChatFormat(tiny_tokenizer)
    # The target (7) is listed second, then first; the third episode lists two non-targets.
    second = ranked_episode(chat, "<recommend>12, 7, 3</recommend>", ["12", "7", "3", "5"], rank=2)
    first = ranked_episode(chat, "<recommend>7, 12</recommend>", ["7", "12", "3", "5"], rank=1)
    missed = ranked_episode(chat, "<recommend>3, 5</recommend>", ["3", "5", "12", "7"], rank=4)
    episodes = [second, first, missed]
    start = second.turns[1].start
    spans = item_token_spans(second.token_ids[start:], tiny_tokenizer, ["12", "7", "3"])
    decoded = [tiny_tokenizer.decode(second.token_ids[start + a : start + b]).strip(" ,") for a, b in spans]
    assert decoded == ["12", "7", "3"]
    episode_advantages = torch.tensor([0.5, 1.0, -1.5])
    credit = rank_credit(episodes, episode_advantages, tiny_tokenizer, scale_by_std=False, width=40)
    # DCG from each position on: second [.63, .63, 0], first [1, 0], missed [0, 0]; position 0's mean
    # over all three is .543, position 1's .21, position 2 only the first episode lists (0).
    dcg = 1 / torch.log2(torch.tensor(3.0))
    expected_second = [dcg - (dcg + 1) / 3, dcg - dcg / 3, 0.0]
    for k, (a, b) in enumerate(spans):
        assert torch.allclose(credit[0, start + a : start + b], torch.tensor(float(expected_second[k])), atol=1e-5), k
    # Tags and separators keep the episode's advantage; the prompt gets none.
    item_tokens = {start + i for a, b in spans for i in range(a, b)}
    others = [i for i in range(start, len(second.token_ids)) if i not in item_tokens]
    assert others and all(credit[0, i] == 0.5 for i in others)
    assert credit[0, :start].abs().sum() == 0 and credit[0, len(second.token_ids):].abs().sum() == 0
    # An episode whose list cannot be read keeps its one advantage on every policy token.
    broken = ranked_episode(chat, "<recommend>7, 12", ["7", "12", "3", "5"], rank=1)
    credit = rank_credit([broken, first], torch.tensor([-1.0, 1.0]), tiny_tokenizer, scale_by_std=True, width=40)
    assert torch.equal(credit[0, : len(broken.token_ids)], -torch.tensor(broken.loss_mask, dtype=torch.float32))


def test_a_repeated_or_unknown_item_is_penalised_not_credited_for_the_target():
    assert item_relevance(["12", "7", "7", "99"], ["12", "7", "3"], rank=2) == [0.0, 1.0, INVALID_ITEM, INVALID_ITEM]
    assert INVALID_ITEM < 0
