"""Token ids of a ChatML conversation, built the same way for rollouts and for SFT.

Rollouts are token-in/token-out: the policy's own tokens are kept as generated and only the
environment's text is tokenized, here, one message at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

from rollout.models import END_OF_TURN


class ChatFormat:
    """ChatML pieces for a tokenizer whose chat template uses ``<|im_start|>role\\n...<|im_end|>``."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.end_of_turn_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def prompt_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """System and first user message, ending where the assistant starts speaking."""
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return self.encode(text + "<|im_start|>assistant\n")

    def observation_ids(self, text: str) -> list[int]:
        """An environment reply after an assistant turn, handing the turn back to the assistant."""
        return self.encode(f"\n<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n")

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def conversation(self, messages: Sequence[dict[str, str]], *,
                     targets: Sequence[bool] | None = None) -> tuple[list[int], list[int]]:
        """Token ids and loss mask (1 on assistant tokens and their end-of-turn) of a whole episode;
        ``targets`` (one flag per message) keeps the loss on the flagged assistant messages only."""
        first_assistant = next(
            (i for i, m in enumerate(messages) if m["role"] == "assistant"), len(messages)
        )
        token_ids = self.prompt_ids(messages[:first_assistant])
        loss_mask = [0] * len(token_ids)
        for index, message in enumerate(messages[first_assistant:], start=first_assistant):
            if message["role"] == "assistant":
                ids = self.encode(message["content"]) + [self.end_of_turn_id]
                token_ids += ids
                loss_mask += [int(targets is None or targets[index])] * len(ids)
            else:
                ids = self.observation_ids(message["content"])
                token_ids += ids
                loss_mask += [0] * len(ids)
        return token_ids, loss_mask
