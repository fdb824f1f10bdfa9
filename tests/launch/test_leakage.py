"""No task's target ever reaches what the agent or a signal reads: histories, prompts, tool outputs,
the CF graph, the sequential model's training sequences, the fusion's validation split."""

import pytest

import envs.signals.sasrec as sasrec
from envs.data.splits import interaction_sort_key
from launch import stages
from launch.config import load_config


@pytest.fixture(scope="module")
def run(tmp_path_factory, ml100k):
    """ml-100k tasks of a run whose tools include every signal (a one-epoch SASRec fit)."""
    run_dir = tmp_path_factory.mktemp("leak")
    config = load_config(None, [f"run_dir={run_dir}", "sequential.epochs=1", "sequential.hidden=16",
                                "env.tools=[user_history,item_cf,user_cf,recent_cf,popularity,genre_year,sequential]"])
    _, train_tasks, eval_tasks = stages.stage_data(config)
    return config, ml100k, train_tasks, eval_tasks


def later_or_equal(catalog, task):
    """The task's target and every interaction of its user from the target on (the data's order:
    by time, then by item id)."""
    ordered = sorted((i for i in catalog.interactions if i.user_id == task.user_id), key=interaction_sort_key)
    position = next(n for n, i in enumerate(ordered) if i.item_id == task.target_item_id)
    return {i.item_id for i in ordered[position:]}


def test_sequential_model_trains_on_no_target_of_either_task_set(run, monkeypatch):
    config, catalog, train_tasks, eval_tasks = run
    fitted = {}
    real = sasrec.load_or_fit_sasrec

    def spy(cache_dir, user_sequences, sasrec_config):
        fitted["sequences"] = user_sequences
        return real(cache_dir, user_sequences, sasrec_config)

    monkeypatch.setattr(sasrec, "load_or_fit_sasrec", spy)
    spec = stages.env_spec(config, catalog, eval_tasks, train_tasks=train_tasks)
    assert "sequential" in spec.signals
    sequences = fitted["sequences"]
    for task in [*train_tasks, *eval_tasks]:
        assert task.target_item_id not in sequences.get(task.user_id, [])
    # Training targets precede held-out ones, so the fit also holds nothing after either.
    for task in train_tasks[:100]:
        assert not later_or_equal(catalog, task) & set(sequences.get(task.user_id, []))


@pytest.mark.parametrize("which", ["train", "eval"])
def test_prompts_histories_and_tools_never_show_the_target(run, which):
    config, catalog, train_tasks, eval_tasks = run
    tasks = train_tasks if which == "train" else eval_tasks
    spec = stages.env_spec(config, catalog, tasks, train_tasks=train_tasks)
    for task in tasks[:150]:
        assert task.target_item_id not in task.history
        assert task.target_item_id not in spec.graph.user_items(task.user_id)
        assert not later_or_equal(catalog, task) & set(spec.graph.user_items(task.user_id))
        env = spec.make()
        prompt, info = env.reset(options={"task": task})
        recent = prompt.split("Recent: ")[1].split("\n")[0]
        assert task.target_item_id not in [entry.split(" ")[0] for entry in recent.split("; ")]
        history = env._toolbox.call("user_history", {"user_id": task.user_id, "k": 20})
        assert task.target_item_id not in history.data
        for name in spec.signals:
            result = env._toolbox.call(name, {"user_id": task.user_id})
            # Ranking tools rank the candidates (the target among them), never a history item.
            assert result.ok and set(result.data) <= set(task.candidate_item_ids)


def test_signals_ignore_anything_but_the_history_they_are_given(run):
    """A signal's scores depend on the history passed in, so a task-bound tool (history = task.history)
    cannot read past the task: adding the target to the history changes them."""
    config, catalog, train_tasks, eval_tasks = run
    spec = stages.env_spec(config, catalog, eval_tasks, train_tasks=train_tasks)
    task = eval_tasks[0]
    for name in ("item_cf", "recent_cf", "user_cf", "genre_year", "sequential"):
        signal = spec.signals[name]
        honest = signal.scores(task.user_id, task.history, task.candidate_item_ids)
        assert honest == signal.scores(task.user_id, task.history, task.candidate_item_ids)
        leaked = signal.scores(task.user_id, (*task.history, task.target_item_id), task.candidate_item_ids)
        assert leaked != honest, name
