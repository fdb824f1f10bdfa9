"""Tests for MACRec's tools (item_history, search, lookup, summarize, finish) and the precomputed CF."""

import json
import random

import pytest

import envs.tools.graph as graph_module
from envs import make_env
from envs.data import build_tasks, training_interactions
from envs.tools import InteractionGraph, Toolbox, ToolInputError, validate_arguments
from envs.tools.items import first_interaction_times, item_label
from envs.tools.search import item_search
from envs.tools.summarize import CHUNK_PROMPT, FINAL_PROMPT, summarize_history
from envs.types import Catalog, Item, RankingTask


@pytest.fixture(scope="module")
def ml100k_setup(ml100k):
    tasks = build_tasks(ml100k)
    train = training_interactions(ml100k.interactions, tasks)
    graph = InteractionGraph.from_interactions(train)
    return ml100k, tasks, train, graph


def bound(setup, task: RankingTask, **kwargs) -> Toolbox:
    catalog, _, _, graph = setup
    return Toolbox(catalog, graph, task=task, **kwargs)


# ---------------------------------------------------------------- item_history


def expected_ratings(catalog, train, task, item_id):
    """Written out independently: training ratings of the item strictly before the task's target
    time, the task's user only where the item is in its history; most recent first, ties by user id."""
    target_time = min(it.timestamp for it in catalog.interactions
                      if it.user_id == task.user_id and it.item_id == task.target_item_id)
    rows = [it for it in train if it.item_id == item_id and it.timestamp < target_time
            and (it.user_id != task.user_id or item_id in task.history)]
    rows.sort(key=lambda it: (-it.timestamp, int(it.user_id)))
    return [{"user_id": it.user_id, "rating": it.rating} for it in rows]


def test_item_history_never_shows_the_target_or_anything_after_its_time(ml100k_setup):
    catalog, tasks, train, _ = ml100k_setup
    cut_something = False
    for task in random.Random(0).sample(tasks, 25):
        toolbox = bound(ml100k_setup, task)
        for item_id in [task.target_item_id, task.history[-1], task.candidate_item_ids[0]]:
            result = toolbox.call("item_history", {"item_id": item_id, "k": 20})
            expected = expected_ratings(catalog, train, task, item_id)
            assert result.ok and result.data == expected[:20], (task.task_id, item_id)
            all_raters = Toolbox(catalog, toolbox.graph).call("item_history", {"item_id": item_id, "k": 20})
            cut_something |= len(all_raters.data) > len(result.data)
        target = toolbox.call("item_history", {"item_id": task.target_item_id, "k": 20})
        assert task.user_id not in [entry["user_id"] for entry in target.data]
    assert cut_something  # the time cutoff really removes later ratings on ml-100k


def test_item_history_text_is_most_recent_first_and_capped_at_k(ml100k_setup):
    catalog, tasks, train, graph = ml100k_setup
    task = next(t for t in tasks if t.user_id == "196")
    toolbox = bound(ml100k_setup, task)
    expected = expected_ratings(catalog, train, task, "242")
    result = toolbox.call("item_history", {"item_id": "242", "k": 3})
    listed = ", ".join(f"{e['user_id']}:{e['rating']:g}" for e in expected[:3])
    assert result.text == f"item 242 last 3 of {len(expected)} ratings: {listed}"
    assert "196:" in toolbox.call("item_history", {"item_id": "242", "k": 20}).text  # 242 is in its history
    assert len(toolbox.call("item_history", {"item_id": "242"}).data) == 5  # the default k
    # Without a task: every training rating, as many as the item's users.
    unbound = Toolbox(catalog, graph).call("item_history", {"item_id": "242", "k": 20})
    assert unbound.text.startswith(f"item 242 last 20 of {graph.popularity('242')} ratings: ")
    times = [r.timestamp for r in graph.item_raters("242")]
    assert times == sorted(times, reverse=True)


def test_item_history_of_an_item_nobody_rated_before(ml100k_setup):
    catalog, _, _, graph = ml100k_setup
    never = next(i for i in catalog.items if not graph.has_item(i))
    assert Toolbox(catalog, graph).call("item_history", {"item_id": never}).text == f"item {never} has no ratings"


def test_first_interaction_times_is_built_once_per_catalog(ml100k_setup):
    catalog = ml100k_setup[0]
    assert first_interaction_times(catalog) is first_interaction_times(catalog)


# ---------------------------------------------------------------- search


def test_search_finds_items_by_title_year_and_genre(ml100k_setup):
    catalog, tasks, _, graph = ml100k_setup
    toolbox = Toolbox(catalog, graph)
    result = toolbox.call("search", {"query": "Star Wars", "k": 3})
    assert result.ok and result.data[0]["item_id"] == "50" and result.data[0]["title"] == "Star Wars"
    assert result.text.startswith("search 'Star Wars': 50 Star Wars (1977) [")
    scores = [entry["score"] for entry in result.data]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and scores[-1] > 0
    for entry in toolbox.call("search", {"query": "film-noir 1940", "k": 10}).data:
        item = catalog.items[entry["item_id"]]
        assert "Film-Noir" in item.genres or item.year == "1940"
    assert toolbox.call("search", {"query": "qqqq the of"}).text == "search 'qqqq the of' found no items"


def test_search_is_restricted_to_the_candidates_unless_asked(ml100k_setup):
    catalog, tasks, _, graph = ml100k_setup
    task = tasks[10]
    toolbox = bound(ml100k_setup, task)
    title = catalog.items[task.candidate_item_ids[3]].title
    found = toolbox.call("search", {"query": title, "k": 20}).data
    assert found[0]["item_id"] == task.candidate_item_ids[3]
    assert {entry["item_id"] for entry in found} <= set(task.candidate_item_ids)
    wide = toolbox.call("search", {"query": "comedy", "k": 20, "candidates_only": False}).data
    assert len(wide) == 20 and not {entry["item_id"] for entry in wide} <= set(task.candidate_item_ids)


def test_search_index_is_built_once_per_catalog(monkeypatch, synthetic_catalog):
    import bm25s

    built = []
    original = bm25s.BM25.index
    monkeypatch.setattr(bm25s.BM25, "index", lambda self, *a, **k: (built.append(1), original(self, *a, **k))[1])
    graph = InteractionGraph.from_interactions(synthetic_catalog.interactions)
    for _ in range(3):
        toolbox = Toolbox(synthetic_catalog, graph)
        assert toolbox.call("search", {"query": "genre1"}).ok
    assert len(built) == 1 and item_search(synthetic_catalog) is item_search(synthetic_catalog)


def test_search_rejects_overlong_queries(ml100k_setup):
    catalog, _, _, graph = ml100k_setup
    result = Toolbox(catalog, graph).call("search", {"query": "x" * 201})
    assert not result.ok and "longer than 200 characters" in result.text


# ---------------------------------------------------------------- lookup


@pytest.mark.parametrize(("field", "text", "value"), [
    ("title", "item 1 title: Toy Story", "Toy Story"),
    ("year", "item 1 year: 1995", "1995"),
    ("genres", "item 1 genres: Animation, Children's, Comedy", ["Animation", "Children's", "Comedy"]),
])
def test_lookup_reads_one_field(ml100k_setup, field, text, value):
    catalog, _, _, graph = ml100k_setup
    result = Toolbox(catalog, graph).call("lookup", {"item_id": "1", "field": field})
    assert (result.ok, result.text, result.data) == (True, text, value)


def test_lookup_users_and_bad_fields(ml100k_setup):
    catalog, _, _, graph = ml100k_setup
    toolbox = Toolbox(catalog, graph)
    assert toolbox.call("lookup", {"item_id": "242", "field": "users"}).text == f"item 242 users: {graph.popularity('242')}"
    bad = toolbox.call("lookup", {"item_id": "242", "field": "plot"})
    assert not bad.ok and "must be one of title, year, genres, users, got 'plot'" in bad.text
    assert "unknown item id" in toolbox.call("lookup", {"item_id": "nope", "field": "title"}).text


# ---------------------------------------------------------------- summarize


TOY_ITEMS = [
    Item("a", "Alpha", "1990", ("Drama",)), Item("b", "Beta", "1992", ("Drama", "War")),
    Item("c", "Gamma", "1991", ("Comedy",)), Item("d", "Delta", "1997", ("Comedy",)),
    Item("e", "Epsilon", "1998", ("Comedy", "Romance")), Item("f", "Zeta", "", ("Horror",)),
]


def test_extractive_summary_summarizes_each_chunk_then_the_chunks():
    summary, chunks = summarize_history(TOY_ITEMS, chunk_size=3)
    assert chunks == ["Drama 2, War 1, Comedy 1; 1990-1992; e.g. Beta",
                      "Comedy 2, Romance 1, Horror 1; 1997-1998; e.g. Epsilon"]
    assert summary == "Comedy 3, Drama 2, War 1; 1990-1998; by part: Drama > Comedy; e.g. Beta, Epsilon"
    assert summarize_history([], chunk_size=3) == ("", [])


class EchoModel:
    """Stands in for an LLM: records every prompt and answers with a numbered summary."""

    def __init__(self):
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return f" summary {len(self.prompts)} "


def test_abstractive_summary_prompts_the_model_chunk_by_chunk():
    model = EchoModel()
    summary, chunks = summarize_history(TOY_ITEMS, chunk_size=4, generate=model)
    assert model.prompts == [
        CHUNK_PROMPT.format(part=1, parts=2, items="\n".join(f"- {item_label(i)}" for i in TOY_ITEMS[:4])),
        CHUNK_PROMPT.format(part=2, parts=2, items="\n".join(f"- {item_label(i)}" for i in TOY_ITEMS[4:])),
        FINAL_PROMPT.format(summaries="1. summary 1\n2. summary 2"),
    ]
    assert "- Alpha (1990) [Drama]\n- Beta (1992) [Drama, War]\n" in model.prompts[0]
    assert (summary, chunks) == ("summary 3", ["summary 1", "summary 2"])
    one = EchoModel()
    assert summarize_history(TOY_ITEMS[:2], chunk_size=4, generate=one) == ("summary 1", ["summary 1"])
    assert len(one.prompts) == 1  # one chunk needs no summary of summaries


def test_summarize_tool_reads_the_task_history_with_the_toolbox_model(ml100k_setup):
    catalog, tasks, _, _ = ml100k_setup
    task = next(t for t in tasks if len(t.history) >= 25)
    model = EchoModel()
    result = bound(ml100k_setup, task, generate=model).call("summarize", {"user_id": task.user_id, "chunk_size": 20})
    parts = (len(task.history) + 19) // 20
    assert result.ok and result.text == f"user {task.user_id}, {len(task.history)} items in {parts} parts: summary {parts + 1}"
    listed = [line[2:] for prompt in model.prompts[:-1] for line in prompt.splitlines() if line.startswith("- ")]
    assert listed == [item_label(catalog.items[i]) for i in task.history]
    assert item_label(catalog.items[task.target_item_id]) not in "".join(model.prompts)
    extractive = bound(ml100k_setup, task).call("summarize", {"user_id": task.user_id})
    assert extractive.ok and len(extractive.data["chunks"]) == (len(task.history) + 9) // 10
    assert extractive.text.endswith(extractive.data["summary"]) and "by part: " in extractive.text


# ---------------------------------------------------------------- finish in SequentialRec-v0


@pytest.fixture
def env_setup(synthetic_catalog):
    tasks = build_tasks(synthetic_catalog, num_negatives=9, seed=0)
    graph = InteractionGraph.from_interactions(training_interactions(synthetic_catalog.interactions, tasks))
    return synthetic_catalog, graph, tasks


def play(env_setup, turns: list[str], **kwargs):
    catalog, graph, tasks = env_setup
    env = make_env("SequentialRec-v0", catalog=catalog, graph=graph, tasks=tasks, **kwargs)
    env.reset(options={"task": tasks[0]})
    return [env.step(turn) for turn in turns]


def finish_call(item_ids) -> str:
    return f"<tool_call>{json.dumps({'name': 'finish', 'arguments': {'item_ids': item_ids}})}</tool_call>"


def ranking_cases(task):
    others = [i for i in task.candidate_item_ids if i != task.target_item_id]
    return [
        [others[0], task.target_item_id, others[1]],  # a partial ranking
        list(reversed(task.candidate_item_ids)),  # a full one
        ["99999", task.target_item_id],  # a non-candidate
        [task.target_item_id, task.target_item_id],  # a repeat
        [],  # empty
    ]


@pytest.mark.parametrize("case", range(5))
@pytest.mark.parametrize("before", ["", '<tool_call>{"name": "popularity", "arguments": {"user_id": "u0"}}</tool_call>'])
def test_finish_ends_the_episode_exactly_like_recommend(env_setup, case, before):
    task = env_setup[2][0]
    item_ids = ranking_cases(task)[case]
    step = 'x<tool_call>{"name": "popularity", "arguments": {"user_id": "%s"}}</tool_call>' % task.user_id
    for first in ([], [step]):
        via_recommend = play(env_setup, [*first, f"<plan>p</plan>{before}<recommend>{', '.join(item_ids)}</recommend>"])
        via_finish = play(env_setup, [*first, f"<plan>p</plan>{before}{finish_call(item_ids)}"])
        (obs_r, reward_r, term_r, trunc_r, info_r), (obs_f, reward_f, term_f, trunc_f, info_f) = via_recommend[-1], via_finish[-1]
        assert term_f and (obs_f, reward_f, term_f, trunc_f) == (obs_r, reward_r, term_r, trunc_r)
        for key in ("errors", "format_valid", "outcome", "tool_results"):
            assert info_f[key] == info_r[key], key
        assert info_f["action"].recommend == info_r["action"].recommend == item_ids


def test_a_bad_finish_is_a_failed_tool_call_and_the_episode_goes_on(env_setup):
    task = env_setup[2][0]
    [(observation, reward, terminated, truncated, info)] = play(env_setup, [finish_call([1, 2])])
    assert not terminated and not truncated and reward == 0.0 and info["outcome"] is None
    assert "argument 'item_ids' must hold JSON strings, got 1" in observation
    # The first valid finish wins; a later one is ignored like any call beside a <recommend>.
    [(_, reward, terminated, _, info)] = play(
        env_setup, [finish_call("x") + finish_call([task.target_item_id]) + finish_call(["99999"])])
    assert terminated and reward == 1.0 and info["outcome"].rank == 1
    assert info["errors"] == ["tool calls in the same turn as <recommend> were ignored"]


def test_finish_only_where_it_is_offered(env_setup):
    task = env_setup[2][0]
    [(observation, _, terminated, _, _)] = play(env_setup, [finish_call([task.target_item_id])], tool_names=["user_cf"])
    assert not terminated and "unknown tool 'finish'" in observation
    [(_, _, terminated, _, info)] = play(env_setup, [finish_call([task.target_item_id])], tool_names=["finish"])
    assert terminated and info["format_valid"] and info["outcome"].rank == 1
    assert "- finish(item_ids): " in make_env("SequentialRec-v0", catalog=env_setup[0], graph=env_setup[1],
                                              tool_names=["finish"]).system_prompt


# ---------------------------------------------------------------- precomputed CF and validation


def test_cf_calls_read_only_the_precomputed_matrices(ml100k_setup):
    catalog, tasks, train, graph = ml100k_setup
    fresh = InteractionGraph.from_interactions(train)
    sample = random.Random(1).sample(tasks, 5)
    for task in sample:  # the first calls build the similarity matrices
        Toolbox(catalog, fresh, task=task).call("item_cf", {"user_id": task.user_id})
        Toolbox(catalog, fresh, task=task).call("user_cf", {"user_id": task.user_id})
    fresh._by_item = None  # a per-call recomputation from the interactions would now fail
    for task in sample:
        for name in ["item_cf", "user_cf", "recent_cf"]:
            ours = Toolbox(catalog, fresh, task=task).call(name, {"user_id": task.user_id})
            assert ours == Toolbox(catalog, graph, task=task).call(name, {"user_id": task.user_id})
    assert fresh.item_neighbours("50", 5) == graph.item_neighbours("50", 5)


def test_sparse_matrices_give_the_dense_scores(monkeypatch, ml100k_setup):
    _, tasks, train, _ = ml100k_setup
    dense = InteractionGraph.from_interactions(train[:20_000])
    monkeypatch.setattr(graph_module, "DENSE_LIMIT", 0)
    sparse = InteractionGraph.from_interactions(train[:20_000])
    for task in tasks[:5]:
        for method in ["item_cf_scores", "user_cf_scores"]:
            args = (task.history, task.candidate_item_ids) if method == "item_cf_scores" else (
                task.user_id, task.candidate_item_ids)
            assert getattr(sparse, method)(*args) == pytest.approx(getattr(dense, method)(*args))
    for method in ["item_neighbours", "user_neighbours"]:
        ours, theirs = getattr(sparse, method)("1", 5), getattr(dense, method)("1", 5)
        assert [i for i, _ in ours] == [i for i, _ in theirs]
        assert [s for _, s in ours] == pytest.approx([s for _, s in theirs])


def test_validate_arguments_checks_enums_lengths_and_array_items():
    schema = {"type": "object", "properties": {
        "field": {"type": "string", "enum": ["a", "b"]},
        "text": {"type": "string", "maxLength": 3},
        "ids": {"type": "array", "items": {"type": "string"}},
    }}
    assert validate_arguments(schema, {"field": "a", "text": "abc", "ids": ["1", "2"]})
    for bad in [{"field": "c"}, {"text": "abcd"}, {"ids": ["1", 2]}, {"ids": [None]}]:
        with pytest.raises(ToolInputError):
            validate_arguments(schema, bad)


def test_new_tools_never_raise_on_garbage(ml100k_setup):
    catalog, tasks, _, graph = ml100k_setup
    toolbox = Toolbox(catalog, graph, task=tasks[0], generate=lambda prompt: "ok")
    garbage = [None, 0, -1, 10**30, 1.5, float("nan"), "", "x" * 500, [], {}, ["1"], [1], {"a": 1}, True]
    for name in ["item_history", "search", "lookup", "summarize", "finish"]:
        properties = toolbox._tools[name][0].parameters["properties"]
        for key in properties:
            for value in garbage:
                valid = {"item_id": "1", "user_id": tasks[0].user_id, "query": "war", "field": "title",
                         "item_ids": ["1"]}
                arguments = {k: valid[k] for k in properties if k in valid} | {key: value}
                result = toolbox.call(name, arguments)
                assert result.ok or result.text.startswith("error: ")
                assert len(result.text) < 600


def test_catalog_without_ratings_or_years_still_answers():
    catalog = Catalog("toy", {}, {"x": Item("x", "Only Title")}, [])
    graph = InteractionGraph({"u": ["x"]})
    toolbox = Toolbox(catalog, graph)
    assert toolbox.call("lookup", {"item_id": "x", "field": "year"}).text == "item x year: unknown"
    assert toolbox.call("item_history", {"item_id": "x"}).text == "item x has no ratings"
    assert toolbox.call("summarize", {"user_id": "u"}).text == "user u, 1 items in 1 parts: e.g. Only Title"


def test_the_search_index_leaves_numba_out_of_the_process():
    """bm25s imports numba when it is installed; numba's llvmlite objects then break the kernel scan a
    vLLM engine runs when it starts in the same process. The index must not bring them in."""
    import subprocess
    import sys

    script = ("import sys; from envs.data import synthetic_catalog; from envs.tools.search import item_search; "
              "item_search(synthetic_catalog()).search('item', 3); "
              "print(sorted(m for m in ('numba', 'llvmlite.binding.ffi') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
