"""Log-probs of a batch's tokens under a causal LM: the one computation the learner and the reference share."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rl.algorithms import token_logprobs
from rl.batch import TokenBatch, in_row_order


class PolicyLogits(nn.Module):
    """A causal LM's logits at selected positions only: the module a learner trains through (and
    that DDP or DeepSpeed wrap), since their gradient reduction hooks into the module called."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor, select: Tensor) -> Tensor:
        """Logits predicting token t+1 at each position t where ``select[:, t]`` (``[B, T-1]``), ``[N, V]``."""
        hidden = decoder_states(self.model, input_ids, attention_mask)
        return language_model(self.model).get_output_embeddings()(hidden[:, :-1][select])


def language_model(model: nn.Module) -> nn.Module:
    """The causal LM itself, under a peft wrapper if there is one."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_states(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """The last hidden state of a causal LM's decoder at every position, ``[B, T, H]`` (no vocabulary projection)."""
    return language_model(model).get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def masked_token_logprobs(model, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor, *,
                          temperature: float = 1.0, bf16: bool = True) -> Tensor:
    """Log-prob of each masked token under ``model``, aligned with ``input_ids``.

    The value at position t is ``log p(token_t | tokens_<t)`` at ``temperature`` where
    ``loss_mask[:, t]`` is non-zero, and 0 elsewhere (always 0 at t = 0). The vocabulary projection
    runs only at those positions: with a 49k vocabulary it is a third of a small model's FLOPs,
    and most tokens of an episode are prompt and tool text. Trailing columns that are padding in
    every row are not run through the model at all. Differentiable when grad is enabled.

    Args:
        model: A causal LM (``transformers``), a peft model wrapping one, or a :class:`PolicyLogits`
            (possibly wrapped by DDP or DeepSpeed).
        input_ids: ``[B, T]`` token ids, right-padded.
        attention_mask: ``[B, T]``, 1 on real tokens.
        loss_mask: ``[B, T]``, non-zero on the tokens to score.
        temperature: Divides the logits (use the sampling temperature).
        bf16: Run the model's matmuls under bfloat16 autocast.

    Returns:
        ``[B, T]`` float32 log-probs on ``input_ids``'s device.
    """
    is_language_model = hasattr(model, "get_decoder") or hasattr(model, "get_base_model")
    logits, select = outputs_at(PolicyLogits(model) if is_language_model else model, input_ids, attention_mask,
                                loss_mask, bf16=bf16)
    if temperature != 1.0:
        logits = logits / temperature
    targets = input_ids[:, 1 : select.shape[1] + 1][select]
    chosen = token_logprobs(logits.unsqueeze(0), targets.unsqueeze(0)).squeeze(0)
    return place(chosen, select, input_ids.shape[1])


def outputs_at(module: nn.Module, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor, *,
               bf16: bool) -> tuple[Tensor, Tensor]:
    """``module(input_ids, attention_mask, select)`` in float32 at the positions that predict the
    masked tokens, and ``select`` (``[B, W-1]``, W the width without all-padding trailing columns,
    which never run through the module). ``module`` is a :class:`PolicyLogits` or a value model."""
    width = int(attention_mask.any(dim=0).nonzero().max()) + 1 if attention_mask.any() else 1
    input_ids, attention_mask = input_ids[:, :width], attention_mask[:, :width]
    select = loss_mask[:, 1:width] != 0
    with torch.autocast(input_ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        return module(input_ids, attention_mask, select).float(), select


def place(values: Tensor, select: Tensor, width: int) -> Tensor:
    """Values at the ``select``ed positions (from :func:`outputs_at`) back on the tokens they
    describe: ``[B, width]``, 0 elsewhere (always at t = 0)."""
    scattered = torch.zeros(select.shape, dtype=values.dtype, device=values.device).masked_scatter(select, values)
    return F.pad(scattered, (1, width - 1 - select.shape[1]))


@torch.no_grad()
def batch_logprobs(model, batch: TokenBatch, *, temperature: float,
                   micro_batches: Sequence[Sequence[int]] | None = None, bf16: bool = True) -> Tensor:
    """:func:`masked_token_logprobs` of a whole batch without gradient, one forward pass per part of
    ``micro_batches`` (rows, from ``TokenBatch.micro_batches``; None: 4 consecutive rows at a time).

    Scores the positions of ``batch.policy_mask``. The batch must be on the model's device.

    Returns:
        ``[B, T]`` float32 log-probs.
    """
    parts = batch.micro_batches(4) if micro_batches is None else micro_batches
    return in_row_order(parts, [
        masked_token_logprobs(model, part.input_ids, part.attention_mask, part.policy_mask, temperature=temperature,
                              bf16=bf16)
        for part in map(batch.rows, parts)
    ])
