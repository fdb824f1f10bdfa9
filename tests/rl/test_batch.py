"""TokenBatch: padding python lists, per-row validation, splitting into micro- and mini-batches."""

import dataclasses

import pytest
import torch

from rl.batch import TokenBatch, in_row_order


def three_rows(**kwargs) -> TokenBatch:
    return TokenBatch.from_sequences([[5, 6, 7], [8], [9, 10]], [[0, 1, 1], [1], [0, 1]], pad_id=0, **kwargs)


def test_from_sequences_right_pads_every_field():
    batch = three_rows(rollout_logprobs=[[0.0, -1.0, -2.0], [-3.0], [0.0, -4.0]],
                       advantages=[[0.0, 1.0, 2.0], [3.0], [0.0, 4.0]])
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert batch.input_ids.dtype == torch.long
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert batch.loss_mask.tolist() == [[0, 1, 1], [1, 0, 0], [0, 1, 0]]
    assert batch.loss_mask.dtype == torch.float32
    assert batch.rollout_logprobs.tolist() == [[0, -1, -2], [-3, 0, 0], [0, -4, 0]]
    assert batch.advantages.tolist() == [[0, 1, 2], [3, 0, 0], [0, 4, 0]]
    assert batch.ref_logprobs is None


def test_missing_fields_are_zeros_and_sequence_advantages_spread_over_policy_tokens():
    batch = three_rows(advantages=[1.5, -1.0, 2.0])
    assert batch.rollout_logprobs.tolist() == [[0, 0, 0]] * 3
    assert batch.advantages.tolist() == [[0, 1.5, 1.5], [-1, 0, 0], [0, 2, 0]]
    from_tensor = three_rows(advantages=torch.tensor([1.5, -1.0, 2.0]))
    assert torch.equal(from_tensor.advantages, batch.advantages)
    assert three_rows().advantages.tolist() == [[0, 0, 0]] * 3


def test_policy_tokens_leave_out_the_first_position():
    batch = three_rows()
    # row 1's only policy token sits at position 0, where nothing predicts it
    assert batch.policy_mask.tolist() == [[0, 1, 1], [0, 0, 0], [0, 1, 0]]
    assert batch.num_tokens == 3 and len(batch) == 3


def test_a_row_of_the_wrong_length_is_named():
    with pytest.raises(ValueError, match="row 1: loss_mask has 2 entries, token_ids 1"):
        TokenBatch.from_sequences([[5, 6], [7]], [[0, 1], [1, 1]], pad_id=0)
    with pytest.raises(ValueError, match="row 0: rollout_logprobs"):
        TokenBatch.from_sequences([[5, 6]], [[0, 1]], pad_id=0, rollout_logprobs=[[0.0]])
    with pytest.raises(ValueError, match="advantages has 1 values"):
        TokenBatch.from_sequences([[5, 6], [7]], [[0, 1], [1]], pad_id=0, advantages=[1.0])
    with pytest.raises(ValueError, match="ref_logprobs has shape"):
        dataclasses.replace(three_rows(), ref_logprobs=torch.zeros(3, 2))


def test_rows_and_split():
    batch = three_rows(ref_logprobs=[[0.0, -1.0, -2.0], [-3.0], [0.0, -4.0]])
    picked = batch.rows(torch.tensor([2, 0]))
    assert picked.input_ids.tolist() == [[9, 10, 0], [5, 6, 7]]
    assert picked.ref_logprobs.tolist() == [[0, -4, 0], [0, -1, -2]]
    assert batch.rows(1).input_ids.tolist() == [[8, 0, 0]]
    parts = batch.split(2)
    assert [len(part) for part in parts] == [2, 1]
    assert torch.equal(torch.cat([part.loss_mask for part in parts]), batch.loss_mask)
    assert batch.to("cpu").input_ids.device.type == "cpu"


def test_micro_batches_hold_at_most_so_many_rows_and_padded_tokens():
    lengths = [3, 9, 3, 2, 3, 2, 2, 2]
    batch = TokenBatch.from_sequences([[1] * n for n in lengths], [[1] * n for n in lengths], pad_id=0)
    assert batch.micro_batches(3) == [[0, 1, 2], [3, 4, 5], [6, 7]]  # rows alone: consecutive, as before
    parts = batch.micro_batches(3, tokens=9)
    # the 9-token row alone, the 3-token rows together, then the 2-token ones, 3 at most
    assert parts == [[1], [0, 2, 4], [3, 5, 6], [7]]
    for part in parts:
        assert len(part) <= 3 and (len(part) == 1 or len(part) * max(lengths[row] for row in part) <= 9)
    assert sorted(row for part in batch.micro_batches(8, tokens=4) for row in part) == list(range(8))
    # the costliest part is halved until there are as many as asked, never more than the rows
    assert batch.micro_batches(8, tokens=100, at_least=2) == [[1, 0, 2, 4], [3, 5, 6, 7]]
    assert len(batch.micro_batches(8, tokens=100, at_least=20)) == 8
    with pytest.raises(ValueError, match="rows >= 1 and tokens >= 0"):
        batch.micro_batches(0)
    with pytest.raises(ValueError, match="rows >= 1 and tokens >= 0"):
        batch.micro_batches(2, tokens=-1)


def test_results_of_reordered_micro_batches_come_back_in_row_order():
    values = torch.arange(8.0).reshape(4, 2)  # row r holds 2r, 2r + 1
    parts = [[2], [0, 3], [1]]
    assert torch.equal(in_row_order(parts, [values[part] for part in parts]), values)
