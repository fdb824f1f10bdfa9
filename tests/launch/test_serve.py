"""`recrl serve`: our OpenAI-compatible endpoint over the tiny model, driven by the official `openai`
client on loopback (non-streaming, streaming, batching of concurrent requests, bad requests)."""

import threading

import httpx
import openai
import pytest

from launch.cli import main
from launch.serve import make_app, serving
from teachers.backends.base import BackendError, ChatParams, Completion, complete
from teachers.backends.engine import EngineBackend

MODEL = "tiny-random"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def engine_backend():
    return EngineBackend.open(MODEL, engine="hf")


@pytest.fixture(scope="module")
def app(engine_backend):
    return make_app(engine_backend, max_batch=8, wait_s=0.05)


@pytest.fixture(scope="module")
def base_url(app):
    with serving(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)


def ask(client, content="hello", **fields):
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}],
                                          **{"max_tokens": 4, "temperature": 0, **fields})


def test_models_lists_the_backend_model(client):
    assert [model.id for model in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).owned_by == "recrl"


def test_completion_is_the_engines_with_consistent_usage(client, engine_backend):
    reply = ask(client, max_tokens=5, seed=3)
    [choice] = reply.choices
    assert reply.object == "chat.completion" and reply.model == MODEL and choice.message.role == "assistant"
    params = ChatParams(max_tokens=5)
    assert choice.message.content == complete(engine_backend, HELLO, params, seed=3)
    assert choice.finish_reason in ("stop", "length")
    usage = reply.usage
    assert usage.prompt_tokens == len(engine_backend.check(HELLO, params))
    assert 1 <= usage.completion_tokens <= 5 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    if choice.finish_reason == "length":
        assert usage.completion_tokens == 5


def test_streamed_deltas_join_into_the_same_completion(client):
    whole = ask(client, max_tokens=6, seed=7)
    chunks = list(ask(client, max_tokens=6, seed=7, stream=True, stream_options={"include_usage": True}))
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [chunk for chunk in chunks if chunk.choices]
    assert "".join(c.choices[0].delta.content or "" for c in with_choices) == whole.choices[0].message.content
    assert with_choices[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert [c.choices[0].finish_reason for c in with_choices[:-1]] == [None] * (len(with_choices) - 1)
    assert chunks[-1].usage == whole.usage  # the include_usage chunk comes last


def test_stream_ends_with_done(base_url):
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 2, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{base_url}/chat/completions", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(event.startswith("data: ") for event in events) and events[-1] == "data: [DONE]"


def test_concurrent_requests_are_batched_and_answer_as_alone(client, app):
    prompts = [f"item {number}" for number in range(4)]  # the same length: no padding in a batch
    alone = [ask(client, prompt).choices[0].message.content for prompt in prompts]
    batch_sizes = app.state.batching.batch_sizes
    calls_before = len(batch_sizes)
    together: list[str | None] = [None] * len(prompts)

    def ask_in_thread(index: int) -> None:
        together[index] = ask(client, prompts[index]).choices[0].message.content

    threads = [threading.Thread(target=ask_in_thread, args=(index,)) for index in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max(batch_sizes[calls_before:]) > 1
    assert sum(batch_sizes[calls_before:]) == len(prompts)
    assert together == alone


@pytest.mark.parametrize("fields, status, message", [
    ({"messages": []}, 400, "at least one message"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "role 'robot'"),
    ({"messages": [{"role": "user"}]}, 400, "no text content"),
    ({"n": 2}, 400, "n=2"),
    ({"max_tokens": 5000}, 400, "exceeds the model's context of 2048"),
    ({"temperature": -1}, 400, "'temperature'"),
    ({"model": "gpt-17"}, 404, "'gpt-17' does not exist here"),
])
def test_bad_requests_get_a_clear_4xx_and_the_server_keeps_serving(client, fields, status, message):
    request = {"model": MODEL, "messages": HELLO, "max_tokens": 1, **fields}
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(**request)
    assert refused.value.status_code == status
    error = refused.value.body
    assert message in error["message"] and error["type"] == "invalid_request_error"
    assert ask(client, max_tokens=1).choices[0].message.content is not None


def test_malformed_json_and_missing_fields_are_400(base_url):
    malformed = httpx.post(f"{base_url}/chat/completions", content=b'{"model": ', timeout=10,
                           headers={"content-type": "application/json"})
    assert malformed.status_code == 400 and "not valid JSON" in malformed.json()["error"]["message"]
    missing = httpx.post(f"{base_url}/chat/completions", json={"model": MODEL}, timeout=10)
    assert missing.status_code == 400
    assert missing.json()["error"] | {"message": ""} == {"message": "", "type": "invalid_request_error",
                                                         "param": "messages", "code": None}
    assert "'messages': Field required" in missing.json()["error"]["message"]
    unknown_path = httpx.get(f"{base_url}/completions", timeout=10)
    assert unknown_path.status_code == 404 and "no such endpoint" in unknown_path.json()["error"]["message"]


class FailsOnRequest:
    """A backend that fails any batch holding the message ``fail`` (the server's 500 path)."""

    model = "flaky"

    def chat(self, conversations, params, *, seeds=None):
        if any(conversation[-1]["content"] == "fail" for conversation in conversations):
            raise BackendError("the GPU caught fire")
        return [Completion("fine", prompt_tokens=1, completion_tokens=1) for _ in conversations]


def test_a_backend_failure_is_a_500_with_its_message_and_the_server_lives_on():
    with serving(make_app(FailsOnRequest())) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=10)
        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(model="flaky", messages=[{"role": "user", "content": "fail"}])
        assert "the GPU caught fire" in failed.value.body["message"] and failed.value.body["type"] == "server_error"
        reply = client.chat.completions.create(model="flaky", messages=[{"role": "user", "content": "ok"}])
        assert reply.choices[0].message.content == "fine"


def test_recrl_serve_hands_its_flags_to_serve(monkeypatch):
    import launch.serve

    calls = []
    monkeypatch.setattr(launch.serve, "serve", lambda model, **options: calls.append((model, options)))
    assert main(["serve", "--model", MODEL, "--engine", "hf", "--port", "8123", "--max-batch", "4"]) == 0
    assert main(["serve", "--model", MODEL, "--kv-cache-gib", "2.5"]) == 0
    assert calls == [(MODEL, {"engine": "hf", "host": "127.0.0.1", "port": 8123, "max_batch": 4, "kv_cache_gib": 4.0}),
                     (MODEL, {"engine": "auto", "host": "127.0.0.1", "port": 8000, "max_batch": 16, "kv_cache_gib": 2.5})]


def test_serve_sizes_the_engines_kv_cache(monkeypatch):
    import uvicorn

    import launch.serve
    import rollout.worker

    built = []

    def build_engine(model_name, *, config, lora, device):
        built.append(config)
        raise RuntimeError("built")

    monkeypatch.setattr(rollout.worker, "build_engine", build_engine)
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    with pytest.raises(RuntimeError, match="built"):
        launch.serve.serve(MODEL, engine="vllm", max_batch=8, kv_cache_gib=3.0)
    assert (built[0].engine, built[0].max_batch_size, built[0].kv_cache_gib) == ("vllm", 8, 3.0)
