"""ChatFormat builds exactly the tokens the model's own chat template builds."""

from rollout.chat import ChatFormat


def test_prompt_ids_match_the_chat_template(tiny_tokenizer):
    chat = ChatFormat(tiny_tokenizer)
    messages = [{"role": "system", "content": "rank things"}, {"role": "user", "content": "User 1. Candidates: 3, 4"}]
    expected = tiny_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(expected, dict) or hasattr(expected, "input_ids"):
        expected = expected["input_ids"]
    assert chat.prompt_ids(messages) == list(expected)


def test_conversation_masks_exactly_the_assistant_turns(tiny_tokenizer):
    chat = ChatFormat(tiny_tokenizer)
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "<plan>a</plan>"},
        {"role": "user", "content": "<tool_response>t</tool_response>"},
        {"role": "assistant", "content": "<recommend>1</recommend>"},
    ]
    token_ids, loss_mask = chat.conversation(messages)
    assert len(token_ids) == len(loss_mask)
    trained = tiny_tokenizer.decode([t for t, m in zip(token_ids, loss_mask) if m])
    assert trained == "<plan>a</plan><|im_end|><recommend>1</recommend><|im_end|>"
    full = tiny_tokenizer.decode(token_ids)
    template = tiny_tokenizer.apply_chat_template(messages, tokenize=False)
    assert full == template.rstrip("\n")
