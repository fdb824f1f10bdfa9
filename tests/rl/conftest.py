"""Fixtures of the rl tests."""

import pytest

from rl.batch import TokenBatch
from rollout.chat import ChatFormat


@pytest.fixture(scope="session")
def episodes_batch():
    """Builds a TokenBatch of three short episodes (different lengths, so there is padding)."""

    def build(tokenizer) -> TokenBatch:
        chat = ChatFormat(tokenizer)
        episodes = [chat.conversation([{"role": "user", "content": "rank 7 and 8"},
                                       {"role": "assistant", "content": answer}])
                    for answer in ("<recommend>7, 8</recommend>", "8", "<recommend>8, 7, 1</recommend>")]
        return TokenBatch.from_sequences([ids for ids, _ in episodes], [mask for _, mask in episodes],
                                         pad_id=tokenizer.pad_token_id)

    return build
