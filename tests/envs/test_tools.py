"""Tests for envs.tools: the interaction graph and the agent's toolbox."""

import math

import pytest

from envs.data import build_tasks, training_interactions
from envs.tools import (
    InteractionGraph,
    ToolInputError,
    ToolResult,
    Toolbox,
    ToolSpec,
    rank_candidates,
    validate_arguments,
)
from envs.signals.signals import GenreYearSignal, graph_signals
from envs.types import Catalog, Interaction, Item, RankingTask

# ---------------------------------------------------------------- InteractionGraph


@pytest.fixture
def tiny_graph() -> InteractionGraph:
    """u1: a, b;  u2: a, b, c;  u3: c, d (added out of time order on purpose)."""
    rows = [("u2", "c", 3), ("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 1), ("u2", "b", 2),
            ("u3", "d", 5), ("u3", "c", 4), ("u1", "a", 9)]
    return InteractionGraph.from_interactions(Interaction(u, i, 5.0, t) for u, i, t in rows)


def test_graph_basics(tiny_graph):
    assert tiny_graph.user_items("u3") == ["c", "d"]
    assert tiny_graph.user_items("u1") == ["a", "b"]  # the repeat of "a" counts once
    assert tiny_graph.user_items("nobody") == []
    assert tiny_graph.has_user("u1") and not tiny_graph.has_user("u9")
    assert tiny_graph.has_item("d") and not tiny_graph.has_item("zz")
    assert [tiny_graph.popularity(i) for i in "abcd"] == [2, 2, 2, 1]
    assert tiny_graph.popularity("zz") == 0


def test_item_cf_scores_sum_cosine_similarities(tiny_graph):
    scores = tiny_graph.item_cf_scores(["a", "zz", "a"], ["b", "c", "d", "zz"])
    assert scores == pytest.approx({"b": 1.0, "c": 0.5, "d": 0.0, "zz": 0.0})
    scores = tiny_graph.item_cf_scores(["a", "d"], ["c"])
    assert scores["c"] == pytest.approx(0.5 + 1 / math.sqrt(2))
    assert tiny_graph.item_cf_scores([], ["a"]) == {"a": 0.0}


def test_user_cf_scores_vote_with_similar_users(tiny_graph):
    scores = tiny_graph.user_cf_scores("u1", ["c", "d"])
    assert scores == pytest.approx({"c": 2 / math.sqrt(6), "d": 0.0})
    # An unknown user described by a history: neighbours u2 (1/sqrt 3) and u3 (1/sqrt 2).
    scores = tiny_graph.user_cf_scores("new", ["c", "d", "zz"], history=["c"])
    assert scores == pytest.approx(
        {"c": 1 / math.sqrt(3) + 1 / math.sqrt(2), "d": 1 / math.sqrt(2), "zz": 0.0}
    )
    scores = tiny_graph.user_cf_scores("new", ["c", "d"], history=["c"], num_neighbours=1)
    assert scores == pytest.approx({"c": 1 / math.sqrt(2), "d": 1 / math.sqrt(2)})
    assert tiny_graph.user_cf_scores("new", ["c"]) == {"c": 0.0}


def test_neighbours_are_sorted_with_ties_broken_by_id(tiny_graph):
    neighbours = tiny_graph.item_neighbours("c", 5)
    assert [i for i, _ in neighbours] == ["d", "a", "b"]  # a and b tie at 0.5
    assert [s for _, s in neighbours] == pytest.approx([1 / math.sqrt(2), 0.5, 0.5])
    assert [i for i, _ in tiny_graph.item_neighbours("c", 2)] == ["d", "a"]
    assert tiny_graph.item_neighbours("zz", 3) == []
    neighbours = tiny_graph.user_neighbours("u2", 5)
    assert [u for u, _ in neighbours] == ["u1", "u3"]
    assert [s for _, s in neighbours] == pytest.approx([2 / math.sqrt(6), 1 / math.sqrt(6)])
    assert tiny_graph.user_neighbours("u9", 3) == []


def test_cf_scores_rank_own_cluster_held_out_items_high(synthetic_catalog):
    tasks = build_tasks(synthetic_catalog)
    graph = InteractionGraph.from_interactions(
        training_interactions(synthetic_catalog.interactions, tasks)
    )
    item_cf_ranks, user_cf_ranks = [], []
    for task in tasks:
        cluster = dict(synthetic_catalog.users[task.user_id].attributes)["cluster"]
        if synthetic_catalog.items[task.target_item_id].genres != (f"genre{cluster}",):
            continue
        candidates = task.candidate_item_ids
        item_scores = graph.item_cf_scores(task.history, candidates)
        user_scores = graph.user_cf_scores(task.user_id, candidates, history=task.history)
        item_cf_ranks.append(rank_candidates(item_scores, candidates).index(task.target_item_id))
        user_cf_ranks.append(rank_candidates(user_scores, candidates).index(task.target_item_id))
    assert len(item_cf_ranks) >= 40
    # A random ranker averages rank 9.5 of 0..19.
    assert sum(item_cf_ranks) / len(item_cf_ranks) < 3.0
    assert sum(user_cf_ranks) / len(user_cf_ranks) < 3.0


# ---------------------------------------------------------------- rank_candidates and validation


def test_rank_candidates_is_stable_on_ties():
    assert rank_candidates({"b": 1.0, "c": 1.0, "a": 0.5}, ["a", "b", "c", "d"]) == [
        "b", "c", "a", "d",
    ]
    assert rank_candidates({}, ["z", "y", "z"]) == ["z", "y"]


def test_validate_arguments_follows_any_schema():
    schema = {
        "type": "object",
        "properties": {
            "query": {"type": "string"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 3, "default": 2},
            "weight": {"type": "number", "maximum": 1.0},
        },
        "required": ["query"],
    }
    assert validate_arguments(schema, {"query": "x"}) == {"query": "x", "limit": 2}
    assert validate_arguments(schema, {"query": "x", "weight": 0.5, "limit": 3})["weight"] == 0.5
    for bad in [{}, {"query": 1}, {"query": "x", "limit": 4}, {"query": "x", "weight": 2},
                {"query": "x", "limit": True}, {"query": "x", "other": 1}, ["query"]]:
        with pytest.raises(ToolInputError):
            validate_arguments(schema, bad)


# ---------------------------------------------------------------- Toolbox on ml-100k


@pytest.fixture(scope="module")
def ml100k_setup(ml100k):
    tasks = build_tasks(ml100k)
    graph = InteractionGraph.from_interactions(training_interactions(ml100k.interactions, tasks))
    task = next(t for t in tasks if t.user_id == "196")
    return ml100k, graph, task


@pytest.fixture
def toolbox(ml100k_setup) -> Toolbox:
    catalog, graph, task = ml100k_setup
    return Toolbox(catalog, graph, task=task)


def test_specs_and_openai_schemas(toolbox):
    assert toolbox.names == ["user_info", "item_info", "user_history", "item_history", "search", "lookup",
                             "summarize", "item_cf", "user_cf", "recent_cf", "popularity", "genre_year", "finish"]
    for spec in toolbox.specs:
        assert isinstance(spec, ToolSpec) and "\n" not in spec.description
    schema = toolbox.openai_schemas()[2]
    assert schema["type"] == "function"
    assert schema["function"]["name"] == "user_history"
    assert schema["function"]["parameters"]["required"] == ["user_id"]
    assert schema["function"]["parameters"]["properties"]["k"]["maximum"] == 20


def test_user_and_item_info(toolbox, ml100k_setup):
    _, graph, task = ml100k_setup
    result = toolbox.call("user_info", {"user_id": "196"})
    assert result == ToolResult(
        "user_info", f"user 196: age 49, gender M, occupation writer; {len(task.history)} items", ok=True,
        data={"age": "49", "gender": "M", "occupation": "writer", "num_items": len(task.history)},
    )
    result = toolbox.call("item_info", {"item_id": "242"})
    assert result.ok
    assert result.text == f"item 242: Kolya (1996) [Comedy]; {graph.popularity('242')} users"
    result = toolbox.call("item_info", {"item_id": "1"})
    assert "Toy Story (1995) [Animation, Children's, Comedy]" in result.text


def test_user_history_shows_the_last_k_items_oldest_first(toolbox, ml100k_setup):
    catalog, graph, task = ml100k_setup
    result = toolbox.call("user_history", {"user_id": "196", "k": 2})
    first, second = task.history[-2:]
    assert result.text == (
        f"user 196 last 2: {first} {catalog.items[first].title} ({catalog.items[first].year}) "
        f"[{', '.join(catalog.items[first].genres)}]; {second} {catalog.items[second].title}"
        f" ({catalog.items[second].year}) [{', '.join(catalog.items[second].genres)}]"
    )
    assert result.data == [first, second]
    assert toolbox.call("user_history", {"user_id": "196"}).text.startswith("user 196 last 5: ")
    other = toolbox.call("user_history", {"user_id": "1", "k": 1}).text  # uses the graph
    assert other.startswith(f"user 1 last 1: {graph.user_items('1')[-1]} ")


def listed(text: str, prefix: str) -> list[tuple[str, int]]:
    """``[(id, score), ...]`` from a ranking tool's ``prefix id:score, id:score`` text."""
    assert text.startswith(prefix), text
    return [(entry.split(":")[0], int(entry.split(":")[1])) for entry in text.removeprefix(prefix).split(", ")]


@pytest.mark.parametrize("method", ["item_cf", "user_cf", "recent_cf", "popularity", "genre_year"])
def test_ranking_tools_rank_the_bound_task_candidates(toolbox, ml100k_setup, method):
    catalog, graph, task = ml100k_setup
    result = toolbox.call(method, {"user_id": "196", "k": 5})
    prefix = f"{method} ranking for user 196: "
    assert result.ok
    signal = graph_signals(catalog, graph)[method]
    scores = signal.scores("196", task.history, task.candidate_item_ids)
    expected = rank_candidates(scores, task.candidate_item_ids)[:5]
    entries = listed(result.text, prefix)
    assert [item_id for item_id, _ in entries] == expected
    assert result.data == expected  # the same ranking as values, for agents that read structure
    # Short scores: 0-100 over the candidates, so the top one is 100 and they never rise down the list.
    short = [score for _, score in entries]
    assert short[0] == 100 and short == sorted(short, reverse=True) and min(short) >= 0
    default = [item_id for item_id, _ in listed(toolbox.call(method, {"user_id": "196"}).text, prefix)]
    assert len(default) == 10 and set(default) <= set(task.candidate_item_ids)


def test_signals_score_the_task_history_only(ml100k_setup):
    catalog, graph, task = ml100k_setup
    signals = graph_signals(catalog, graph)
    assert signals["item_cf"].scores("196", task.history, ["242"]) == graph.item_cf_scores(task.history, ["242"])
    assert signals["recent_cf"].scores("196", task.history, ["242"]) == graph.item_cf_scores(task.history[-5:], ["242"])
    assert signals["user_cf"].scores("196", task.history, ["242"]) == graph.user_cf_scores(
        "196", ["242"], history=task.history)
    assert signals["popularity"].scores("196", (), ["242", "zz"]) == {"242": graph.popularity("242"), "zz": 0.0}


def test_genre_year_prefers_the_recent_genres_and_years():
    catalog = Catalog("toy", {}, {
        "old": Item("old", "Old Western", "1950", ("Western",)),
        "new_western": Item("new_western", "New Western", "1997", ("Western",)),
        "new_comedy": Item("new_comedy", "New Comedy", "1997", ("Comedy",)),
        "seen": Item("seen", "Seen", "1996", ("Western",)),
        "undated": Item("undated", "Undated"),
    }, [])
    scores = GenreYearSignal(catalog).scores("u", ["seen"], ["old", "new_western", "new_comedy", "undated", "zz"])
    assert scores["new_western"] > scores["old"] and scores["new_western"] > scores["new_comedy"]
    assert scores["new_comedy"] > scores["undated"] == scores["zz"] == 0.0
    assert GenreYearSignal(catalog).scores("u", [], ["old"]) == {"old": 0.0}  # no history: no affinity


@pytest.mark.parametrize("method", ["item_cf", "user_cf"])
def test_ranking_tools_without_a_task_recommend_unseen_items(ml100k_setup, method):
    catalog, graph, _ = ml100k_setup
    result = Toolbox(catalog, graph).call(method, {"user_id": "196", "k": 7})
    ids = [item_id for item_id, _ in listed(result.text, f"{method} ranking for user 196: ")]
    assert len(ids) == 7 and not set(ids) & set(graph.user_items("196"))


def test_max_k_bounds_the_default_and_the_maximum(ml100k_setup):
    catalog, graph, task = ml100k_setup
    small = Toolbox(catalog, graph, task=task, max_k=3)
    assert len(small.call("item_cf", {"user_id": "196"}).text.split(", ")) == 3
    assert not small.call("item_cf", {"user_id": "196", "k": 4}).ok


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("recommend", {}, "unknown tool 'recommend'; available: user_info, item_info"),
        (None, {}, "unknown tool None"),
        ("user_info", ["196"], "arguments must be a JSON object, got list"),
        ("user_info", "196", "arguments must be a JSON object, got str"),
        ("user_info", None, "arguments must be a JSON object"),
        ("user_info", {}, "missing required argument 'user_id'"),
        ("user_info", {"user_id": "196", "verbose": True}, "unexpected argument 'verbose'"),
        ("user_info", {"user_id": 196}, "argument 'user_id' must be a JSON string, got 196"),
        ("item_info", {"item_id": 242}, "argument 'item_id' must be a JSON string"),
        ("user_history", {"user_id": "196", "k": True}, "must be a JSON integer, got True"),
        ("user_history", {"user_id": "196", "k": 2.0}, "must be a JSON integer"),
        ("user_history", {"user_id": "196", "k": "5"}, "must be a JSON integer"),
        ("item_cf", {"user_id": "196", "k": 0}, "argument 'k' must be >= 1, got 0"),
        ("user_cf", {"user_id": "196", "k": 21}, "argument 'k' must be <= 20, got 21"),
        ("user_info", {"user_id": "99999"}, "unknown user id '99999'"),
        ("item_cf", {"user_id": "nobody"}, "unknown user id 'nobody'"),
        ("item_info", {"item_id": "99999"}, "unknown item id '99999'"),
    ],
)
def test_bad_calls_return_errors_instead_of_raising(toolbox, name, arguments, message):
    result = toolbox.call(name, arguments)
    assert not result.ok
    assert result.text == f"error: {result.error}"
    assert message in result.text


def test_no_garbage_makes_a_tool_raise(toolbox):
    garbage = [None, 0, -1, 10**30, 1.5, float("nan"), "", "x" * 500, [], {}, ["196"], {"a": 1}]
    for name in toolbox.names:
        for value in garbage:
            for key in ["user_id", "item_id", "k"]:
                result = toolbox.call(name, {"user_id": "196", "item_id": "1", key: value})
                assert isinstance(result, ToolResult)
                assert result.ok or result.text.startswith("error: ")
                assert len(result.text) < 200


def test_task_user_unknown_to_the_catalog_can_still_be_queried(ml100k_setup):
    catalog, graph, _ = ml100k_setup
    task = RankingTask(task_id="cold:1", user_id="cold-start", history=("242", "1"), candidate_item_ids=("50", "100"), target_item_id="50")
    toolbox = Toolbox(catalog, graph, task=task)
    assert toolbox.call("user_info", {"user_id": "cold-start"}).text == "user cold-start: 2 items"
    assert toolbox.call("item_cf", {"user_id": "cold-start", "k": 2}).ok
