"""OpenAIBackend: against our real server (`recrl serve` over the tiny model), and its retries,
backoff, refusals, timeouts and concurrency limit against scripted transports."""

import json
import socket
import threading
import time

import httpx
import pytest

from launch.serve import make_app, serving
from teachers.backends import BackendConfig, make_backend
from teachers.backends.base import BackendError, ChatParams
from teachers.backends.engine import EngineBackend
from teachers.backends.openai import OpenAIBackend

HELLO = [{"role": "user", "content": "hello"}]
BASE_URL = "http://llm.test/v1"


@pytest.fixture(scope="module")
def engine_backend():
    return EngineBackend.open("tiny-random", engine="hf")


@pytest.fixture(scope="module")
def served(engine_backend):
    with serving(make_app(engine_backend)) as url:
        backend = OpenAIBackend(base_url=url, model="tiny-random", timeout_s=60, max_retries=0)
        yield backend
        backend.close()


def test_completions_from_the_server_are_the_engines(served, engine_backend):
    conversations = [HELLO, [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a film?"}]]
    params = ChatParams(max_tokens=4, stop=("zzz-never",))
    assert served.chat(conversations, params, seeds=[1, 2]) == engine_backend.chat(conversations, params, seeds=[1, 2])


def test_the_servers_refusals_raise_at_once_with_its_message(served):
    with pytest.raises(BackendError, match=r"refused the request \(400\): .*exceeds the model's context of 2048"):
        served.chat([HELLO], ChatParams(max_tokens=5000))
    wrong_model = OpenAIBackend(base_url=served.url.removesuffix("/chat/completions"), model="gpt-17")
    with pytest.raises(BackendError, match=r"\(404\): the model 'gpt-17' does not exist here"):
        wrong_model.chat([HELLO], ChatParams(max_tokens=1))


def chat_reply(text: str, finish_reason: str = "stop", prompt_tokens: int = 3, completion_tokens: int = 2) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def mocked(handler, **options) -> OpenAIBackend:
    """A backend whose requests go to ``handler`` (a tiny backoff, so retries take milliseconds)."""
    return OpenAIBackend(**{"base_url": BASE_URL, "model": "m", "backoff_s": 0.001,
                            "transport": httpx.MockTransport(handler), **options})


def test_sends_the_params_and_seed_and_reads_the_reply():
    requests = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json=chat_reply("an answer<end> and more", "length", 7, 5))

    params = ChatParams(max_tokens=9, temperature=0.7, top_p=0.9, stop=("<end>",))
    [completion] = mocked(handler).chat([HELLO], params, seeds=[42])
    [request] = requests
    assert str(request.url) == f"{BASE_URL}/chat/completions" and "authorization" not in request.headers
    assert json.loads(request.content) == {"model": "m", "messages": HELLO, "max_tokens": 9, "temperature": 0.7,
                                           "top_p": 0.9, "seed": 42, "stop": ["<end>"]}
    # A server that ignores stop strings: they are cut here, and the completion ended at one.
    assert (completion.text, completion.finish_reason) == ("an answer", "stop")
    assert (completion.prompt_tokens, completion.completion_tokens) == (7, 5)


def refused_connection(request):
    raise httpx.ConnectError("connection refused", request=request)


def timed_out(request):
    raise httpx.ReadTimeout("timed out", request=request)


@pytest.mark.parametrize("failure", [
    refused_connection, timed_out,
    lambda request: httpx.Response(429, json={"error": {"message": "slow down"}}),
    lambda request: httpx.Response(500, text="oops"),
    lambda request: httpx.Response(503, json={"detail": "loading"}),
], ids=["connect", "timeout", "429", "500", "503"])
def test_transient_failures_are_retried(failure):
    attempts = []

    def handler(request):
        attempts.append(request)
        return failure(request) if len(attempts) <= 2 else httpx.Response(200, json=chat_reply("ok"))

    assert mocked(handler, max_retries=2).chat([HELLO], ChatParams())[0].text == "ok"
    assert len(attempts) == 3


def test_gives_up_after_the_last_retry_naming_the_url_and_the_error():
    attempts = []

    def handler(request):
        attempts.append(request)
        return httpx.Response(503, json={"error": {"message": "the model is overloaded"}})

    with pytest.raises(BackendError) as failed:
        mocked(handler, max_retries=3).chat([HELLO], ChatParams())
    assert len(attempts) == 4
    assert str(failed.value) == (f"{BASE_URL}/chat/completions failed 4 times; the last error: "
                                 "503: the model is overloaded")


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_a_refused_request_fails_at_once_with_the_servers_message(status):
    attempts = []

    def handler(request):
        attempts.append(request)
        return httpx.Response(status, json={"error": {"message": "no such thing", "type": "invalid_request_error"}})

    with pytest.raises(BackendError, match=rf"refused the request \({status}\): no such thing$"):
        mocked(handler, max_retries=5).chat([HELLO], ChatParams())
    assert len(attempts) == 1


def test_backoff_doubles_and_retry_after_is_honoured():
    times = []

    def handler(request):
        times.append(time.monotonic())
        if len(times) == 4:
            return httpx.Response(429, headers={"Retry-After": "0.3"})
        return httpx.Response(500) if len(times) < 4 else httpx.Response(200, json=chat_reply("ok"))

    mocked(handler, max_retries=4, backoff_s=0.04).chat([HELLO], ChatParams())
    waits = [later - earlier for earlier, later in zip(times, times[1:])]
    # Exponential with jitter: retry k waits between half and all of 0.04 * 2**k; then what Retry-After says.
    assert [wait >= 0.5 * 0.04 * 2 ** retry for retry, wait in enumerate(waits[:3])] == [True] * 3
    assert waits[3] >= 0.3


def test_a_real_timeout_is_retried_then_reported():
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        backend = OpenAIBackend(base_url=url, model="m", timeout_s=0.2, max_retries=1, backoff_s=0.001)
        started = time.monotonic()
        with pytest.raises(BackendError, match=rf"^{url}/chat/completions failed 2 times; the last error: ReadTimeout"):
            backend.chat([HELLO], ChatParams())
    assert time.monotonic() - started >= 0.4


def test_a_closed_port_is_a_connect_error():
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    backend = OpenAIBackend(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=1, backoff_s=0.001)
    with pytest.raises(BackendError, match="failed 2 times; the last error: ConnectError"):
        backend.chat([HELLO], ChatParams())


def test_at_most_concurrency_requests_are_in_flight_and_results_keep_their_order():
    lock, in_flight, most = threading.Lock(), [0], [0]

    def handler(request):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.03)
        with lock:
            in_flight[0] -= 1
        return httpx.Response(200, json=chat_reply(json.loads(request.content)["messages"][-1]["content"].upper()))

    conversations = [[{"role": "user", "content": f"question {number}"}] for number in range(12)]
    completions = mocked(handler, concurrency=3).chat(conversations, ChatParams())
    assert [completion.text for completion in completions] == [f"QUESTION {number}" for number in range(12)]
    assert 2 <= most[0] <= 3


def test_from_config_reads_the_environment(monkeypatch):
    requests = []

    def handler(request):
        requests.append(request)
        return httpx.Response(200, json=chat_reply("ok"))

    config = BackendConfig(kind="openai", model="m", api_key_env="RECRL_TEST_KEY", max_retries=0)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("RECRL_TEST_KEY", raising=False)
    OpenAIBackend.from_config(config, transport=httpx.MockTransport(handler)).chat([HELLO], ChatParams())
    monkeypatch.setenv("OPENAI_BASE_URL", BASE_URL)
    monkeypatch.setenv("RECRL_TEST_KEY", "sk-test")
    OpenAIBackend.from_config(config, transport=httpx.MockTransport(handler)).chat([HELLO], ChatParams())
    assert str(requests[0].url) == "http://127.0.0.1:8000/v1/chat/completions"
    assert "authorization" not in requests[0].headers
    assert str(requests[1].url) == f"{BASE_URL}/chat/completions"
    assert requests[1].headers["authorization"] == "Bearer sk-test"
    assert isinstance(make_backend(config), OpenAIBackend)


def test_bad_settings_and_messages_are_value_errors():
    with pytest.raises(ValueError, match="must start with http:// or https://"):
        OpenAIBackend(base_url="127.0.0.1:8000/v1", model="m")
    backend = mocked(lambda request: httpx.Response(200, json=chat_reply("ok")))
    with pytest.raises(ValueError, match="role 'robot'"):
        backend.chat([[{"role": "robot", "content": "hi"}]], ChatParams())


def test_a_reply_that_is_no_chat_completion_is_a_backend_error():
    backend = mocked(lambda request: httpx.Response(200, json={"object": "list", "data": []}))
    with pytest.raises(BackendError, match="answered without a chat completion"):
        backend.chat([HELLO], ChatParams())
