"""A teacher on our engines in its own process (backend kind hf): on the device its config names."""

import pytest
import torch

from teachers.backends import BackendConfig, ChatParams, make_backend

QUESTION = [{"role": "user", "content": "Which film should I watch tonight?"}]


def engine_device(backend) -> torch.device:
    return backend.backend.engine.device  # BatchingBackend -> EngineBackend -> HFEngine


def test_an_hf_teacher_runs_on_the_cpu_it_is_given():
    backend = make_backend(BackendConfig(kind="hf", model="tiny-random", device="cpu", concurrency=2))
    assert engine_device(backend).type == "cpu"
    replies = backend.chat([QUESTION, QUESTION[:1] + [{"role": "user", "content": "And a book?"}]],
                           ChatParams(max_tokens=6))
    assert len(replies) == 2 and all(0 < r.completion_tokens <= 6 for r in replies)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where no GPU is visible")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        make_backend(BackendConfig(kind="hf", model="tiny-random", device="cuda"))


def test_an_unknown_device_is_refused_with_the_config():
    with pytest.raises(ValueError, match="unknown device 'tpu'; use auto, cpu or cuda"):
        BackendConfig(kind="hf", device="tpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_an_hf_teacher_runs_on_the_gpu_by_default():
    backend = make_backend(BackendConfig(kind="hf", model="tiny-random", concurrency=4))
    assert engine_device(backend).type == "cuda"
    replies = backend.chat([QUESTION] * 3, ChatParams(max_tokens=8))
    assert [r.text for r in replies] == [replies[0].text] * 3  # greedy: the same prompt, the same reply
    assert all(0 < r.completion_tokens <= 8 for r in replies)
