"""TokenBatch: the padded token tensors a learner or reference model reads, built from episodes."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from rl.algorithms import token_advantages


@dataclass(frozen=True)
class TokenBatch:
    """Right-padded ``[B, T]`` tensors of B token sequences (episodes), aligned with ``input_ids``.

    Position t of every per-token tensor describes token t. Padding is 0 everywhere (``pad_id``
    in ``input_ids``). Set reference log-probs on a built batch with
    ``dataclasses.replace(batch, ref_logprobs=...)``.
    """

    input_ids: Tensor
    """Token ids, long."""
    attention_mask: Tensor
    """1 on real tokens, 0 on padding, long."""
    loss_mask: Tensor
    """1 on tokens the policy produced, float."""
    rollout_logprobs: Tensor
    """The sampler's log-prob of each policy token (0 elsewhere, or everywhere when unknown), float."""
    advantages: Tensor
    """Advantage of each policy token, float."""
    ref_logprobs: Tensor | None = None
    """The reference model's log-prob of each policy token, float; None until scored."""

    def __post_init__(self):
        shape = self.input_ids.shape
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and value.shape != shape:
                raise ValueError(f"TokenBatch.{field.name} has shape {tuple(value.shape)}, "
                                 f"input_ids {tuple(shape)}; every field is [B, T].")

    @classmethod
    def from_sequences(cls, token_ids: Sequence[Sequence[int]], loss_mask: Sequence[Sequence[int]], *, pad_id: int,
                       rollout_logprobs: Sequence[Sequence[float]] | None = None,
                       advantages: Sequence[float] | Sequence[Sequence[float]] | None = None,
                       ref_logprobs: Sequence[Sequence[float]] | None = None) -> TokenBatch:
        """Pads python lists (e.g. ``Trajectory.token_ids``, ``.loss_mask``, ``.logprobs``) into a batch.

        Args:
            token_ids: One list of token ids per sequence.
            loss_mask: Per sequence, 1 on policy tokens; as long as its ``token_ids``.
            pad_id: Id written into ``input_ids`` after each sequence's end.
            rollout_logprobs: Per sequence, the sampler's log-prob of each token; zeros if None.
            advantages: One float per sequence (spread over its policy tokens; a list or a ``[B]``
                tensor) or one list per sequence (per token); zeros if None.
            ref_logprobs: Per sequence, reference log-probs of each token; None if None.

        Raises:
            ValueError: If the batch is empty or a per-token list of a row is not as long as its
                ``token_ids`` (the message names the row).
        """
        if len(token_ids) == 0:
            raise ValueError("cannot build a TokenBatch from no sequences")
        lengths = [len(ids) for ids in token_ids]
        if isinstance(advantages, Tensor):
            advantages = advantages.tolist()
        per_token = {"loss_mask": loss_mask, "rollout_logprobs": rollout_logprobs, "ref_logprobs": ref_logprobs}
        per_sequence_advantages = advantages is not None and all(isinstance(a, numbers.Real) for a in advantages)
        if advantages is not None and not per_sequence_advantages:
            per_token["advantages"] = advantages
        for name, rows in per_token.items():
            if rows is None:
                continue
            if len(rows) != len(lengths):
                raise ValueError(f"{name} has {len(rows)} rows, token_ids {len(lengths)}")
            for row, (values, length) in enumerate(zip(rows, lengths)):
                if len(values) != length:
                    raise ValueError(f"row {row}: {name} has {len(values)} entries, token_ids {length}")
        if per_sequence_advantages and len(advantages) != len(lengths):
            raise ValueError(f"advantages has {len(advantages)} values, token_ids {len(lengths)} rows")

        def pad(rows, dtype, value=0):
            return pad_sequence([torch.tensor(r, dtype=dtype) for r in rows], batch_first=True, padding_value=value)

        input_ids = pad(token_ids, torch.long, pad_id)
        loss = pad(loss_mask, torch.float32)
        zeros = torch.zeros_like(loss)
        if advantages is None:
            token_level = zeros
        elif per_sequence_advantages:
            token_level = token_advantages(torch.tensor(advantages, dtype=torch.float32), loss)
        else:
            token_level = pad(advantages, torch.float32)
        return cls(
            input_ids=input_ids,
            attention_mask=pad([[1] * n for n in lengths], torch.long),
            loss_mask=loss,
            rollout_logprobs=zeros if rollout_logprobs is None else pad(rollout_logprobs, torch.float32),
            advantages=token_level,
            ref_logprobs=None if ref_logprobs is None else pad(ref_logprobs, torch.float32),
        )

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def policy_mask(self) -> Tensor:
        """``loss_mask`` without position 0: a first token has no context to be scored in."""
        mask = self.loss_mask.clone()
        mask[:, 0] = 0
        return mask

    @property
    def num_tokens(self) -> int:
        """Policy tokens in the batch (the sum of ``policy_mask``)."""
        return int(self.loss_mask[:, 1:].sum())

    def _map(self, fn) -> TokenBatch:
        return TokenBatch(**{f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name))
                             for f in dataclasses.fields(self)})

    def rows(self, index: int | slice | Sequence[int] | Tensor) -> TokenBatch:
        """The sub-batch of the given rows (an int keeps a batch of one)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return self._map(lambda tensor: tensor[index])

    def split(self, size: int) -> list[TokenBatch]:
        """Consecutive sub-batches of ``size`` rows (the last one may be smaller), e.g. micro-batches."""
        if size < 1:
            raise ValueError(f"split size must be >= 1, got {size}")
        return [self.rows(slice(start, start + size)) for start in range(0, len(self), size)]

    def micro_batches(self, rows: int, tokens: int = 0, *, at_least: int = 1) -> list[list[int]]:
        """The rows of each forward pass: at most ``rows`` of them and, when ``tokens`` is set, at most
        that many tokens once padded to the pass's longest sequence (a longer one goes alone), so a
        pass's memory is bounded by tokens rather than a row count. With ``tokens``, rows of like
        length go together (longest first): short episodes share a pass while a long one goes alone.
        Otherwise consecutive rows. The costliest pass is halved until there are ``at_least`` (as far
        as the rows allow): the learners of a group each run as many passes as the others.

        >>> lengths = [5, 2, 6, 2]
        >>> batch = TokenBatch.from_sequences([[1] * n for n in lengths], [[1] * n for n in lengths], pad_id=0)
        >>> batch.micro_batches(2)
        [[0, 1], [2, 3]]
        >>> batch.micro_batches(4, tokens=9)
        [[2], [0], [1, 3]]
        >>> batch.micro_batches(4, tokens=9, at_least=4)
        [[2], [0], [1], [3]]
        """
        if rows < 1 or tokens < 0:
            raise ValueError(f"a micro-batch needs rows >= 1 and tokens >= 0, got rows={rows}, tokens={tokens}")
        lengths = self.attention_mask.sum(dim=1).tolist()
        order = sorted(range(len(lengths)), key=lambda row: -lengths[row]) if tokens else range(len(lengths))
        parts: list[list[int]] = []
        for row in order:
            part = parts[-1] if parts else []
            # with ``tokens`` the rows come longest first: a part's first row is its longest
            if not part or len(part) >= rows or (tokens and (len(part) + 1) * lengths[part[0]] > tokens):
                parts.append([row])
            else:
                part.append(row)

        def cost(part: list[int]) -> int:
            return len(part) * max(lengths[row] for row in part)

        while len(parts) < at_least and any(len(part) > 1 for part in parts):
            index = max((i for i, part in enumerate(parts) if len(part) > 1), key=lambda i: cost(parts[i]))
            part = parts[index]
            parts[index : index + 1] = [part[: len(part) // 2], part[len(part) // 2 :]]
        return parts

    def to(self, device: torch.device | str) -> TokenBatch:
        """The same batch with every tensor on ``device``."""
        return self._map(lambda tensor: tensor.to(device))


def in_row_order(parts: Sequence[Sequence[int]], values: Sequence[Tensor]) -> Tensor:
    """The results of each pass of :meth:`TokenBatch.micro_batches` (``[len(part), T]`` each) as one
    ``[B, T]`` tensor in the batch's row order."""
    rows = torch.tensor([row for part in parts for row in part], device=values[0].device)
    return torch.cat(list(values))[torch.argsort(rows)]
