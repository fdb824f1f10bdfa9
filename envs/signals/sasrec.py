"""SASRec: a self-attentive sequential recommender (Kang & McAuley, 2018) as a ranking signal.

A small causal transformer reads a user's recent items, oldest first, and scores every item as the
next one by a dot product with its embedding. Unlike the paper's binary loss with one sampled
negative, training uses a full softmax over all items at every position, which converges far faster
on small data. Everything is seeded, and a fit leaves torch's global random state untouched.

``fit_sasrec`` trains a ``SequentialScorer``; ``load_or_fit_sasrec`` caches fits on disk by a digest
of their sequences and config.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from envs.data.splits import id_sort_key

UNKNOWN_ITEM_SCORE = float("-inf")
"""Score of a candidate the model never saw in training: below every known item."""

FORMAT_VERSION = 1
"""Version of the saved folder layout; part of the cache digest."""

WEIGHTS_FILE = "model.safetensors"
"""The network's weights in a saved folder."""
META_FILE = "sasrec.json"
"""The config, item ids and format version in a saved folder."""
PADDING_INDEX = 0
"""Item index of padding; real items are 1..len(item_ids)."""


@dataclass(frozen=True)
class SASRecConfig:
    """Model size and training schedule of a SASRec fit."""

    max_len: int = 50
    """Most recent items the model reads (older history is dropped)."""
    hidden: int = 64
    """Width of item and position embeddings and of every block."""
    blocks: int = 2
    """Causal self-attention blocks."""
    heads: int = 1
    """Attention heads per block; must divide ``hidden``."""
    dropout: float = 0.2
    """Dropout on embeddings, attention weights and block outputs during training."""
    epochs: int = 30
    """Passes over every training window."""
    batch_size: int = 128
    """Training windows per optimizer step."""
    lr: float = 3e-3
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    seed: int = 0
    """Seeds initialization, dropout and window order."""
    bf16: bool = True
    """Train under bfloat16 autocast on CPU (scoring always runs in float32): about a fifth faster
    on CPUs with AVX-512 BF16 at equal accuracy; turn it off on CPUs without native bfloat16."""

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"SASRecConfig.heads={self.heads} must divide hidden={self.hidden}")
        if self.max_len < 1 or self.epochs < 0 or self.batch_size < 1:
            raise ValueError(f"SASRecConfig needs max_len >= 1, epochs >= 0, batch_size >= 1; got {self}")


class SASRecNetwork(nn.Module):
    """Item and position embeddings, pre-LN causal transformer blocks, and a final LayerNorm.

    Inputs are left-padded with ``PADDING_INDEX``. Positions count back from the last column, so
    the most recent item always has the same position whatever the padding, and real items never
    attend to padding: scores do not depend on how far a batch is padded.
    """

    def __init__(self, num_items: int, *, max_len: int, hidden: int, blocks: int, heads: int, dropout: float):
        super().__init__()
        self.max_len = max_len
        self.heads = heads
        self.item_embedding = nn.Embedding(num_items + 1, hidden, padding_idx=PADDING_INDEX)
        self.position_embedding = nn.Embedding(max_len, hidden)
        self.embedding_dropout = nn.Dropout(dropout)
        block = nn.TransformerEncoderLayer(
            hidden, heads, dim_feedforward=hidden, dropout=dropout, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, blocks, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(hidden)
        # Item vectors are read after a sqrt(hidden) scale and scored against unit-scale hidden
        # states; torch's N(0, 1) default would start the softmax with logits of size ~hidden.
        nn.init.normal_(self.item_embedding.weight, std=hidden**-0.5)
        nn.init.normal_(self.position_embedding.weight, std=hidden**-0.5)
        with torch.no_grad():
            self.item_embedding.weight[PADDING_INDEX].zero_()

    def attention_mask(self, item_indices: torch.Tensor) -> torch.Tensor:
        """``True`` where attention is blocked: future items, and padding (except a position's own
        self, so that rows of padding stay finite), one ``[L, L]`` mask per batch row and head."""
        length = item_indices.shape[1]
        future = torch.ones(length, length, dtype=torch.bool).triu(1)
        own = torch.eye(length, dtype=torch.bool)
        padding_keys = (item_indices == PADDING_INDEX)[:, None, :] & ~own
        return (future | padding_keys).repeat_interleave(self.heads, dim=0)

    def forward(self, item_indices: torch.Tensor) -> torch.Tensor:
        """Hidden state after each prefix.

        Args:
            item_indices: ``[batch, length]`` item indices, left-padded, ``length <= max_len``.

        Returns:
            ``[batch, length, hidden]``; row ``t`` summarises items up to and including ``t``.
        """
        length = item_indices.shape[1]
        positions = torch.arange(self.max_len - length, self.max_len)
        hidden = self.item_embedding(item_indices) * math.sqrt(self.item_embedding.embedding_dim)
        hidden = self.embedding_dropout(hidden + self.position_embedding(positions))
        hidden = self.blocks(hidden, mask=self.attention_mask(item_indices))
        return self.final_norm(hidden)

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every real item (column ``j`` is item index ``j + 1``) for each hidden row."""
        return hidden @ self.item_embedding.weight[1:].T


def _network(num_items: int, config: SASRecConfig) -> SASRecNetwork:
    return SASRecNetwork(
        num_items, max_len=config.max_len, hidden=config.hidden, blocks=config.blocks,
        heads=config.heads, dropout=config.dropout,
    )


def _left_pad(rows: Sequence[Sequence[int]], length: int) -> torch.Tensor:
    """Rows of item indices, each right-aligned in a ``[len(rows), length]`` tensor of padding."""
    padded = torch.full((len(rows), length), PADDING_INDEX, dtype=torch.long)
    for row, indices in enumerate(rows):
        if indices:
            padded[row, length - len(indices):] = torch.tensor(indices, dtype=torch.long)
    return padded


def training_windows(
    index_sequences: Sequence[Sequence[int]], max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-item training pairs: each sequence cut into windows of ``max_len`` steps from its end.

    Args:
        index_sequences: Each user's item indices, oldest first.
        max_len: Window length.

    Returns:
        ``(inputs, targets)``, both ``[windows, max_len]`` and left-padded; ``targets[w, t]`` is the
        item after ``inputs[w, t]``, or padding where there is none.

    >>> inputs, targets = training_windows([[1, 2, 3, 4]], max_len=2)
    >>> inputs.tolist(), targets.tolist()
    ([[2, 3], [0, 1]], [[3, 4], [0, 2]])
    """
    inputs, targets = [], []
    for sequence in index_sequences:
        for end in range(len(sequence) - 1, 0, -max_len):
            start = max(end - max_len, 0)
            inputs.append(sequence[start:end])
            targets.append(sequence[start + 1 : end + 1])
    return _left_pad(inputs, max_len), _left_pad(targets, max_len)


class SequentialScorer:
    """A fitted model with its item vocabulary.

    Attributes:
        item_ids: Known items; ``item_ids[j]`` has index ``j + 1`` (0 is padding).
        config: The config the model was fitted with.
    """

    def __init__(self, network: SASRecNetwork, item_ids: Sequence[str], config: SASRecConfig):
        self.network = network.eval()
        self.item_ids = list(item_ids)
        self.config = config
        self._index = {item_id: index for index, item_id in enumerate(self.item_ids, start=1)}

    def _history_indices(self, history: Sequence[str]) -> list[int]:
        known = [self._index[item_id] for item_id in history if item_id in self._index]
        return known[-self.config.max_len :]

    def scores(self, history: Sequence[str], candidate_item_ids: Sequence[str]) -> dict[str, float]:
        """Score of each candidate as the item that follows ``history``.

        Args:
            history: Item ids, oldest first; the last ``max_len`` known ones are read and unknown
                ids are skipped. An empty history (or one of unknown ids only) is scored from
                position alone, which training never targets: a weak signal, but finite.
            candidate_item_ids: Items to score.

        Returns:
            Higher is better; unknown candidates get ``UNKNOWN_ITEM_SCORE``.
        """
        return self.scores_batch([history], [candidate_item_ids])[0]

    def scores_batch(
        self, histories: Sequence[Sequence[str]], candidates: Sequence[Sequence[str]], *, batch_size: int = 512
    ) -> list[dict[str, float]]:
        """``scores`` for many tasks at once, ``batch_size`` histories per forward pass."""
        if len(histories) != len(candidates):
            raise ValueError(
                f"scores_batch needs one candidate list per history; got {len(histories)} histories "
                f"and {len(candidates)} candidate lists"
            )
        results: list[dict[str, float]] = []
        for start in range(0, len(histories), batch_size):
            chunk = slice(start, start + batch_size)
            results += self._score_chunk(histories[chunk], candidates[chunk])
        return results

    def _score_chunk(
        self, histories: Sequence[Sequence[str]], candidates: Sequence[Sequence[str]]
    ) -> list[dict[str, float]]:
        rows = [self._history_indices(history) for history in histories]
        item_indices = _left_pad(rows, max(1, max(map(len, rows), default=0)))
        # Score only the (task, known candidate) pairs, not every item for every task.
        pairs = [
            (row, item_id) for row, ids in enumerate(candidates) for item_id in ids if item_id in self._index
        ]
        task_rows = torch.tensor([row for row, _ in pairs], dtype=torch.long)
        item_columns = torch.tensor([self._index[item_id] for _, item_id in pairs], dtype=torch.long)
        with torch.inference_mode():
            last_hidden = self.network(item_indices)[:, -1]
            pair_scores = (last_hidden[task_rows] * self.network.item_embedding.weight[item_columns]).sum(-1)
        results: list[dict[str, float]] = [dict.fromkeys(ids, UNKNOWN_ITEM_SCORE) for ids in candidates]
        for (row, item_id), score in zip(pairs, pair_scores.tolist()):
            results[row][item_id] = score
        return results

    def save(self, folder: Path) -> None:
        """Write ``model.safetensors`` and ``sasrec.json`` (config and item ids) into ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        weights = {name: tensor.contiguous() for name, tensor in self.network.state_dict().items()}
        save_file(weights, folder / WEIGHTS_FILE)
        meta = {"format_version": FORMAT_VERSION, "config": asdict(self.config), "item_ids": self.item_ids}
        (folder / META_FILE).write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path) -> "SequentialScorer":
        """Read a folder written by ``save``.

        Raises:
            FileNotFoundError: A file is missing.
            ValueError: The folder is from another format version or does not match its config.
        """
        from safetensors.torch import load_file

        folder = Path(folder)
        for name in (META_FILE, WEIGHTS_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"no {name} in {folder}; write it with SequentialScorer.save or refit")
        try:
            meta = json.loads((folder / META_FILE).read_text())
            if meta.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format version {meta.get('format_version')}, expected {FORMAT_VERSION}")
            config = SASRecConfig(**meta["config"])
            network = _network(len(meta["item_ids"]), config)
            network.load_state_dict(load_file(folder / WEIGHTS_FILE))
        except Exception as error:  # json, safetensors and torch each raise their own types
            raise ValueError(
                f"cannot load a SASRec model from {folder} ({error}); delete the folder and refit"
            ) from error
        return cls(network, meta["item_ids"], config)


def fit_sasrec(
    user_sequences: dict[str, list[str]], config: SASRecConfig, *, progress: bool = True
) -> SequentialScorer:
    """Train SASRec on each user's next items.

    Runs on torch's current thread count. On a machine whose cores other processes also use,
    ``torch.set_num_threads(1)`` trains several times faster than two contended threads.

    Args:
        user_sequences: Each user's items, oldest first (training interactions only).
        config: Model size and schedule.
        progress: Show a progress bar over epochs with the mean training loss.

    Returns:
        The fitted scorer, in eval mode. The same sequences and config give the same weights on
        the same machine and thread count, whatever the order of ``user_sequences``.

    Raises:
        ValueError: No user has two items, so there is nothing to learn from.
    """
    from tqdm import tqdm

    item_ids = sorted({item_id for items in user_sequences.values() for item_id in items}, key=id_sort_key)
    index = {item_id: position for position, item_id in enumerate(item_ids, start=1)}
    ordered_users = sorted(user_sequences, key=id_sort_key)
    index_sequences = [[index[item_id] for item_id in user_sequences[user]] for user in ordered_users]
    inputs, targets = training_windows(index_sequences, config.max_len)
    if len(inputs) == 0:
        raise ValueError("fit_sasrec needs at least one user with two or more items; got none")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        network = _network(len(item_ids), config)
        optimizer = torch.optim.AdamW(
            network.parameters(), lr=config.lr, betas=(0.9, 0.98), weight_decay=config.weight_decay
        )
        network.train()
        progress_bar = tqdm(range(config.epochs), desc="sasrec fit", unit="epoch", disable=not progress)
        for _ in progress_bar:
            total_loss, total_targets = 0.0, 0
            for batch in torch.randperm(len(inputs)).split(config.batch_size):
                batch_targets = targets[batch]
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
                    hidden = network(inputs[batch])[batch_targets != PADDING_INDEX]
                    logits = network.item_logits(hidden)
                # Column j of the logits is item index j + 1.
                loss = F.cross_entropy(logits.float(), batch_targets[batch_targets != PADDING_INDEX] - 1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += loss.item() * len(hidden)
                total_targets += len(hidden)
            progress_bar.set_postfix(loss=f"{total_loss / total_targets:.4f}")
    return SequentialScorer(network, item_ids, config)


def sasrec_digest(user_sequences: dict[str, list[str]], config: SASRecConfig) -> str:
    """sha256 hex digest of the sequences, the config and the format version: the cache key."""
    payload = {"format_version": FORMAT_VERSION, "config": asdict(config), "user_sequences": user_sequences}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def load_or_fit_sasrec(
    cache_dir: Path, user_sequences: dict[str, list[str]], config: SASRecConfig
) -> SequentialScorer:
    """Load the cached fit of these sequences and config, or fit and cache it.

    The fit lives in ``cache_dir/<sasrec_digest>/``. It is written to a temporary folder and then
    renamed, so a reader never sees half a fit; a folder that fails to load is refitted.

    Args:
        cache_dir: Parent folder of cached fits (created if needed).
        user_sequences: As for ``fit_sasrec``.
        config: As for ``fit_sasrec``.

    Returns:
        The loaded or freshly fitted scorer.
    """
    cache_dir = Path(cache_dir)
    folder = cache_dir / sasrec_digest(user_sequences, config)
    if folder.exists():
        try:
            return SequentialScorer.load(folder)
        except (OSError, ValueError) as error:
            warnings.warn(f"Refitting SASRec: the cached fit is unusable ({error}).", stacklevel=2)
            shutil.rmtree(folder, ignore_errors=True)
    scorer = fit_sasrec(user_sequences, config)
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=cache_dir))
    scorer.save(staging)
    try:
        staging.rename(folder)
    except OSError:  # another process cached the same fit first; theirs is identical
        shutil.rmtree(staging, ignore_errors=True)
    return scorer
