"""Tests for envs.data: loading ml-100k, splits, task files and the synthetic catalog."""

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from envs.data import (
    DataNotFoundError,
    build_tasks,
    find_ml100k_dir,
    id_sort_key,
    leave_last_out,
    load_ml100k,
    load_tasks,
    save_tasks,
    synthetic_catalog,
    tasks_from_file,
    training_interactions,
)
from envs.data import movielens
from envs.types import Catalog, Interaction, Item, RankingTask, User


def make_catalog(rows: list[tuple[str, str, float]], extra_items: int = 0) -> Catalog:
    """A catalog from (user, item, timestamp) rows, plus unseen items "x0", "x1", ..."""
    interactions = [Interaction(u, i, 4.0, t) for u, i, t in rows]
    item_ids = {i for _, i, _ in rows} | {f"x{n}" for n in range(extra_items)}
    return Catalog(
        name="toy",
        users={u: User(u) for u, _, _ in rows},
        items={i: Item(i, f"Title {i}") for i in item_ids},
        interactions=interactions,
    )


# ---------------------------------------------------------------- ml-100k


def test_find_ml100k_dir_finds_bundled_files():
    folder = find_ml100k_dir()
    assert folder.name == "ml-100k"
    assert (folder / "ml-100k.inter").is_file()


def test_load_ml100k_has_the_documented_sizes_and_fields(ml100k):
    assert ml100k.name == "ml-100k"
    assert (len(ml100k.users), len(ml100k.items), len(ml100k.interactions)) == (943, 1682, 100000)
    assert ml100k.users["196"].attributes == (
        ("age", "49"), ("gender", "M"), ("occupation", "writer"),
    )
    assert ml100k.items["242"] == Item("242", "Kolya", "1996", ("Comedy",))
    assert ml100k.items["1"].genres == ("Animation", "Children's", "Comedy")
    assert ml100k.interactions[0] == Interaction("196", "242", 3.0, 881250949.0)


def test_load_ml100k_reads_columns_by_header_name(tmp_path):
    (tmp_path / "ml-100k.user").write_text(
        "zip_code:token\toccupation:token\tgender:token\tage:token\tuser_id:token\n"
        "85711\twriter\tF\t30\t7\n"
    )
    (tmp_path / "ml-100k.item").write_text(
        "class:token_seq\trelease_year:token\tmovie_title:token_seq\titem_id:token\n"
        "Drama Crime\t1999\tSome Film\t3\n"
    )
    (tmp_path / "ml-100k.inter").write_text(
        "timestamp:float\trating:float\titem_id:token\tuser_id:token\n5\t4\t3\t7\n"
    )
    catalog = load_ml100k(tmp_path)
    assert catalog.users["7"].attributes == (
        ("age", "30"), ("gender", "F"), ("occupation", "writer"),
    )
    assert catalog.items["3"] == Item("3", "Some Film", "1999", ("Drama", "Crime"))
    assert catalog.interactions == [Interaction("7", "3", 4.0, 5.0)]


def test_missing_recbole_names_the_install_command(monkeypatch):
    monkeypatch.setattr(movielens.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataNotFoundError, match=r"pip install --no-deps recbole==1\.2\.1"):
        find_ml100k_dir()
    assert issubclass(DataNotFoundError, FileNotFoundError)


def test_recbole_without_dataset_files_names_the_install_command(monkeypatch, tmp_path):
    spec = SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    monkeypatch.setattr(movielens.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(DataNotFoundError, match=r"recbole==1\.2\.1") as error:
        find_ml100k_dir()
    assert str(tmp_path) in str(error.value)


# ---------------------------------------------------------------- ordering and leave-last-out


def test_id_sort_key_compares_digit_ids_as_numbers():
    assert sorted(["10", "9", "b", "100", "a"], key=id_sort_key) == ["9", "10", "100", "a", "b"]


def test_leave_last_out_breaks_timestamp_ties_by_numeric_then_text_item_id():
    rows = [
        ("1", "10", 20.0), ("1", "5", 10.0), ("1", "9", 20.0),  # "10" > "9" numerically
        ("2", "7", 1.0),  # a single interaction: nothing held out
        ("3", "b", 5.0), ("3", "a", 5.0),  # non-numeric ids
    ]
    interactions = make_catalog(rows).interactions
    train, held_out = leave_last_out(interactions)
    assert {u: h.item_id for u, h in held_out.items()} == {"1": "10", "3": "b"}
    assert [(it.user_id, it.item_id) for it in train] == [
        ("1", "5"), ("1", "9"), ("2", "7"), ("3", "a"),
    ]


# ---------------------------------------------------------------- build_tasks


@pytest.fixture(scope="module")
def ml100k_tasks(ml100k) -> list[RankingTask]:
    return build_tasks(ml100k)


def test_build_tasks_on_ml100k_gives_clean_tasks(ml100k, ml100k_tasks):
    seen: dict[str, set[str]] = {}
    for it in ml100k.interactions:
        seen.setdefault(it.user_id, set()).add(it.item_id)
    assert len(ml100k_tasks) == 943
    assert [t.user_id for t in ml100k_tasks[:3]] == ["1", "2", "3"]
    for task in ml100k_tasks:
        candidates = task.candidate_item_ids
        assert task.task_id == f"ml-100k:{task.user_id}"
        assert len(candidates) == 20 and len(set(candidates)) == 20
        assert task.target_item_id in candidates
        assert task.target_item_id not in task.history
        assert 0 < len(task.history) <= 50
        negatives = set(candidates) - {task.target_item_id}
        assert not negatives & seen[task.user_id]


def test_build_tasks_history_is_the_latest_train_items_in_order():
    rows = [("1", str(i), float(100 - i)) for i in range(1, 8)]  # item 7 is oldest, 1 newest
    catalog = make_catalog(rows, extra_items=5)
    (task,) = build_tasks(catalog, num_negatives=3, max_history=4)
    assert task.target_item_id == "1"
    assert task.history == ("5", "4", "3", "2")
    assert set(task.candidate_item_ids) - {"1"} <= {f"x{n}" for n in range(5)}


def test_build_tasks_is_deterministic_and_independent_of_other_users(ml100k, ml100k_tasks):
    assert build_tasks(ml100k) == ml100k_tasks
    assert build_tasks(ml100k, seed=1) != ml100k_tasks
    keep = {"5", "196"}
    subset = Catalog(
        name=ml100k.name,
        users={u: ml100k.users[u] for u in keep},
        items=ml100k.items,
        interactions=[it for it in ml100k.interactions if it.user_id in keep],
    )
    by_user = {t.user_id: t for t in ml100k_tasks}
    assert build_tasks(subset) == [by_user["5"], by_user["196"]]


def test_build_tasks_rejects_too_few_unseen_items():
    catalog = make_catalog([("1", "a", 1.0), ("1", "b", 2.0)], extra_items=2)
    with pytest.raises(ValueError, match="num_negatives"):
        build_tasks(catalog, num_negatives=3)


# ---------------------------------------------------------------- task files


def test_save_and_load_tasks_round_trip(tmp_path, ml100k_tasks):
    path = tmp_path / "nested" / "tasks.jsonl"
    save_tasks(ml100k_tasks[:10], path)
    assert load_tasks(path) == ml100k_tasks[:10]


def test_load_tasks_reports_missing_and_malformed_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such.jsonl"):
        load_tasks(tmp_path / "no_such.jsonl")
    path = tmp_path / "bad.jsonl"
    path.write_text('{"task_id": "a"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        load_tasks(path)


TOY_ROWS = [("1", "a", 1.0), ("1", "b", 2.0), ("1", "c", 3.0), ("1", "d", 4.0), ("2", "a", 1.0)]


def write_lines(tmp_path: Path, rows: list) -> Path:
    path = tmp_path / "user_tasks.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_tasks_from_file_builds_history_before_the_target(tmp_path, ml100k):
    catalog = make_catalog(TOY_ROWS, extra_items=3)
    path = write_lines(tmp_path, [
        {"user_id": "1", "candidate_item_ids": ["x0", "c", "x1"], "target_item_id": "c"},
        "",
        {"user_id": "2", "candidate_item_ids": ["x2", "d"], "target_item_id": "d"},
    ])
    first, second = tasks_from_file(path, catalog, max_history=1)
    assert first == RankingTask(task_id="toy:1:1", user_id="1", history=("b",), candidate_item_ids=("x0", "c", "x1"), target_item_id="c")
    assert second.task_id == "toy:2:3" and second.history == ("a",)  # never saw "d": all items

    integer_ids = {"user_id": 196, "candidate_item_ids": [242, 1], "target_item_id": 242}
    path = write_lines(tmp_path, [integer_ids])
    (task,) = tasks_from_file(path, ml100k)
    assert task.candidate_item_ids == ("242", "1") and task.target_item_id == "242"
    assert task.history == ()  # (196, 242) is user 196's earliest rating


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "malformed JSON"),
        ({"user_id": "1", "target_item_id": "a"}, "candidate_item_ids"),
        ({"user_id": "99", "candidate_item_ids": ["a", "b"], "target_item_id": "a"}, "'99'"),
        ({"user_id": "1", "candidate_item_ids": ["a", "zz"], "target_item_id": "a"}, "'zz'"),
        ({"user_id": "1", "candidate_item_ids": ["a", "b"], "target_item_id": "c"}, "'c'"),
        (
            {"user_id": "1", "candidate_item_ids": ["a", "b", "a"], "target_item_id": "a"},
            "duplicate",
        ),
        ({"user_id": "1", "candidate_item_ids": ["a"], "target_item_id": "a"}, "at least 2"),
        ({"user_id": "1", "candidate_item_ids": ["a", 1.5], "target_item_id": "a"}, "1.5"),
    ],
)
def test_tasks_from_file_names_file_line_and_value(tmp_path, line, message):
    catalog = make_catalog(TOY_ROWS)
    ok = {"user_id": "1", "candidate_item_ids": ["a", "b"], "target_item_id": "b"}
    path = write_lines(tmp_path, [ok, line])
    with pytest.raises(ValueError, match=message) as error:
        tasks_from_file(path, catalog)
    assert "user_tasks.jsonl:2" in str(error.value)


def test_tasks_from_file_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        tasks_from_file(tmp_path / "nope.jsonl", make_catalog(TOY_ROWS))


# ---------------------------------------------------------------- training_interactions


def test_training_interactions_equal_leave_last_out_train(ml100k, ml100k_tasks, synthetic_catalog):
    assert training_interactions(ml100k.interactions, ml100k_tasks) == leave_last_out(
        ml100k.interactions
    )[0]
    tasks = build_tasks(synthetic_catalog)
    assert training_interactions(synthetic_catalog.interactions, tasks) == leave_last_out(
        synthetic_catalog.interactions
    )[0]


def test_training_interactions_cut_at_the_earliest_target():
    interactions = make_catalog(TOY_ROWS).interactions
    tasks = [
        RankingTask(task_id="t1", user_id="1", history=(), candidate_item_ids=("d", "a"), target_item_id="d"),
        RankingTask(task_id="t2", user_id="1", history=(), candidate_item_ids=("b", "a"), target_item_id="b"),
        RankingTask(task_id="t3", user_id="2", history=(), candidate_item_ids=("zz", "a"), target_item_id="zz"),  # never interacted: nothing dropped
    ]
    kept = training_interactions(interactions, tasks)
    assert [(it.user_id, it.item_id) for it in kept] == [("1", "a"), ("2", "a")]


# ---------------------------------------------------------------- synthetic catalog


def test_synthetic_catalog_has_planted_clusters(synthetic_catalog):
    catalog = synthetic_catalog
    assert catalog.name == "synthetic"
    assert (len(catalog.users), len(catalog.items), len(catalog.interactions)) == (60, 80, 720)
    assert catalog.items["7"].title == "Item 7"
    per_user: dict[str, list[Interaction]] = {}
    for it in catalog.interactions:
        per_user.setdefault(it.user_id, []).append(it)
    own = Counter()
    for user_id, sequence in per_user.items():
        assert len({it.item_id for it in sequence}) == 12
        timestamps = [it.timestamp for it in sequence]
        assert timestamps == sorted(timestamps) and len(set(timestamps)) == 12
        cluster = dict(catalog.users[user_id].attributes)["cluster"]
        own.update(catalog.items[it.item_id].genres == (f"genre{cluster}",) for it in sequence)
    assert 0.85 <= own[True] / len(catalog.interactions) <= 0.95


def test_synthetic_catalog_is_seeded():
    assert synthetic_catalog(seed=3) == synthetic_catalog(seed=3)
    assert synthetic_catalog(seed=3).interactions != synthetic_catalog(seed=4).interactions
    with pytest.raises(ValueError, match="num_items"):
        synthetic_catalog(num_items=20, interactions_per_user=12)
