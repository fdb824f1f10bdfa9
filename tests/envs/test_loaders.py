"""Tests for the Amazon and ReDial loaders, the k-core filter, MACRec's protocol and their launch wiring."""

import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from envs.data import (
    DataFormatError,
    DataNotFoundError,
    build_tasks,
    dialogue_tasks,
    find_amazon_files,
    k_core,
    leave_last_out,
    load_amazon,
    load_redial,
    read_conversations,
    redial_catalog,
    training_interactions,
)
from envs.data.redial import split_title
from envs.data.splits import interaction_sort_key
from envs.types import Catalog, DialogueTask, Interaction, Item, User

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
AMAZON_2018 = FIXTURES / "amazon2018"
AMAZON_2023 = FIXTURES / "amazon2023"
REDIAL = FIXTURES / "redial" / "dialogues.jsonl"


def pairs(interactions) -> set[tuple[str, str]]:
    return {(it.user_id, it.item_id) for it in interactions}


# ---------------------------------------------------------------- k-core


def test_k_core_repeats_until_no_user_or_item_is_below_k():
    rows = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "b"), ("u3", "c"), ("u4", "c")]
    interactions = [Interaction(u, i, 5.0, float(n)) for n, (u, i) in enumerate(rows)]
    # Pass 1 drops u4 (1 interaction); then c has 1 (u3); then u3 has 1 (b); then b has 2: stable.
    one_pass = [it for it in interactions if it.user_id != "u4"]
    assert pairs(one_pass) != pairs(k_core(one_pass, 2))  # a single pass is not enough
    kept = k_core(interactions, 2)
    assert [(it.user_id, it.item_id) for it in kept] == [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b")]
    assert k_core(interactions, 1) == interactions == k_core(interactions, 0)
    assert k_core(interactions, 3) == []
    with pytest.raises(ValueError, match="k must be >= 0"):
        k_core(interactions, -1)


# ---------------------------------------------------------------- Amazon


def test_amazon_2018_reviews_and_metadata_in_their_3_core():
    catalog = load_amazon(AMAZON_2018, k=3)
    assert catalog.name == "amazon"
    # Five rounds drop something: Serenity (2 reviewers) and a two-film user; then a user left with 2;
    # then Pan's Labyrinth and Pride & Prejudice; then two more users; then Amélie.
    assert set(catalog.users) == {"A1CZICCYP2M5PX", "A3R5OBKS7OM2IR", "A2SUAM1J3GNN3B", "AEWNU2GKIV2SB",
                                  "A1HC72VDRLANIW", "A17FLA8HQOFVIG"}
    assert set(catalog.items) == {"0783225911", "B00005JNOG", "B00003CXCT", "6305837325", "B00004RF9B",
                                  "B00005JKZY", "B0000AQS0F", "B00005JLXH"}
    assert len(catalog.interactions) == 27
    per_user = Counter(it.user_id for it in catalog.interactions)
    per_item = Counter(it.item_id for it in catalog.interactions)
    assert min(per_user.values()) >= 3 and min(per_item.values()) >= 3
    assert catalog.items["B00003CXCT"] == Item("B00003CXCT", "The Matrix", "",
                                               ("Movies & TV", "Genre for Featured Categories", "Science Fiction"))
    assert catalog.items["B00004RF9B"].genres[-1] == "Action & Adventure"  # HTML-unescaped
    first = catalog.interactions[0]
    assert first == Interaction("A1CZICCYP2M5PX", "0783225911", 5.0, 1422057600.0)
    # k=2 keeps everyone: only the review without metadata, the untitled item's and a repeat go.
    loose = load_amazon(AMAZON_2018, k=2)
    assert len(loose.users) == 10 and len(loose.interactions) == 42
    assert loose.items["B00006JMRD"].title == "Pride & Prejudice" and loose.items["B000059H9E"].title == "Amélie"
    assert not {"B00019G9X8", "B0000TPA2O"} & {it.item_id for it in loose.interactions}
    repeat = [it for it in loose.interactions if it.user_id == "A2NJO6YE954DBH" and it.item_id == "6305837325"]
    assert len(repeat) == 1  # the earliest of the two reviews
    times = [json.loads(line)["unixReviewTime"] for line in (AMAZON_2018 / "Movies_and_TV_5.json").open()
             if '"A2NJO6YE954DBH"' in line and '"6305837325"' in line]
    assert repeat[0].timestamp == min(times)


def test_amazon_2023_uses_parent_asin_and_seconds():
    catalog = load_amazon(AMAZON_2023 / "Video_Games.jsonl", k=2)
    assert (len(catalog.users), len(catalog.items), len(catalog.interactions)) == (5, 6, 17)
    assert "AGXVBIUFLFGMVLATYXHJYL4A5Q7Q" not in catalog.users  # one review: out of the 2-core
    assert "B0BN942894" not in catalog.items  # metadata without reviews
    assert "B09NMGK5T3" not in {it.item_id for it in catalog.interactions}  # reviews without metadata
    controller = [it for it in catalog.interactions if it.item_id == "B08FC5L3RG"]  # reviewed as variants
    assert len(controller) == 3
    assert catalog.items["B08FC5L3RG"].genres == ("Video Games", "PlayStation 5", "Accessories", "Controllers")
    assert catalog.items["B00ZQB28XK"] == Item("B00ZQB28XK", "Minecraft - Xbox One")
    first = json.loads((AMAZON_2023 / "Video_Games.jsonl").open().readline())
    assert catalog.interactions[0] == Interaction(first["user_id"], first["parent_asin"], first["rating"],
                                                  first["timestamp"] / 1000)
    tasks = build_tasks(catalog, num_negatives=1, max_history=5)
    assert len(tasks) == 5
    for task in tasks:
        assert task.target_item_id in task.candidate_item_ids and task.target_item_id not in task.history
        assert set(task.candidate_item_ids) <= set(catalog.items)


def test_amazon_reads_gzip_like_plain_files(tmp_path):
    for source in (AMAZON_2023 / "Video_Games.jsonl", AMAZON_2023 / "meta_Video_Games.jsonl"):
        with gzip.open(tmp_path / f"{source.name}.gz", "wb") as handle:
            handle.write(source.read_bytes())
    assert load_amazon(tmp_path, k=2) == load_amazon(AMAZON_2023, k=2)
    assert load_amazon(tmp_path / "Video_Games.jsonl.gz", k=2) == load_amazon(AMAZON_2023, k=2)


def test_amazon_2014_metadata_written_as_python_literals(tmp_path):
    reviews = tmp_path / "reviews_Beauty_5.json"
    reviews.write_text("".join(json.dumps({"reviewerID": user, "asin": item, "overall": 4.0, "unixReviewTime": t,
                                            "reviewTime": "01 1, 2014", "helpful": [0, 0]}) + "\n"
                               for t, (user, item) in enumerate([("A1", "7806397051"), ("A1", "9759091062"),
                                                                 ("A2", "7806397051"), ("A2", "9759091062")])))
    (tmp_path / "meta_Beauty.json").write_text(
        "{'asin': '7806397051', 'title': 'Xtreme Brite Brightening Gel 1oz.', "
        "'categories': [['Beauty', 'Hair Care', 'Styling Products'], ['Beauty', 'Hair Care', 'Gels']]}\n"
        "{'asin': '9759091062', 'title': \"Mary's Lip Balm\", 'salesRank': {'Beauty': 2}, 'categories': [['Beauty']]}\n"
        "{'asin': '0000000000', 'categories': [['Beauty']]}\n"
    )
    assert find_amazon_files(reviews) == (reviews, tmp_path / "meta_Beauty.json")
    catalog = load_amazon(reviews, k=2)
    assert catalog.items["7806397051"].genres == ("Beauty", "Hair Care", "Styling Products", "Gels")
    assert catalog.items["9759091062"].title == "Mary's Lip Balm"
    assert len(catalog.interactions) == 4


def test_amazon_file_layouts_and_their_errors(tmp_path):
    assert find_amazon_files(AMAZON_2018) == (AMAZON_2018 / "Movies_and_TV_5.json",
                                              AMAZON_2018 / "meta_Movies_and_TV.json")
    assert find_amazon_files(AMAZON_2018 / "Movies_and_TV_5.json")[1].name == "meta_Movies_and_TV.json"
    with pytest.raises(DataNotFoundError, match="no_such_folder"):
        load_amazon(tmp_path / "no_such_folder")
    shutil.copy(AMAZON_2023 / "Video_Games.jsonl", tmp_path / "Video_Games.jsonl")
    with pytest.raises(DataNotFoundError, match=r"tried \['meta_Video_Games.jsonl'\]"):
        find_amazon_files(tmp_path / "Video_Games.jsonl")
    with pytest.raises(DataNotFoundError, match=r"metadata files \[\], not one of each"):
        find_amazon_files(tmp_path)
    with pytest.raises(DataNotFoundError, match="missing_meta.json"):
        load_amazon(tmp_path / "Video_Games.jsonl", tmp_path / "missing_meta.json")


def write_reviews(tmp_path: Path, lines: list) -> Path:
    folder = tmp_path / "amazon"
    folder.mkdir(exist_ok=True)
    shutil.copy(AMAZON_2018 / "meta_Movies_and_TV.json", folder)
    path = folder / "Movies_and_TV.json"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return folder


GOOD_2018 = {"reviewerID": "A1", "asin": "B00003CXCT", "overall": 5.0, "unixReviewTime": 1422057600}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"reviewerID": "A1", "asin": ', r"Movies_and_TV\.json:3: not JSON"),
        ("[1, 2]", r"Movies_and_TV\.json:3: expected a JSON object"),
        ({"reviewerID": "A1", "asin": "B00003CXCT", "overall": 5.0},
         r"Movies_and_TV\.json:3: missing field\(s\) \['unixReviewTime'\]"),
        ({"user_id": "AF1", "parent_asin": "B00003CXCT", "rating": 4.0},
         r"Movies_and_TV\.json:3: missing field\(s\) \['timestamp'\]; 2023 review"),
        ({"asin": "B00003CXCT", "rating": 4.0}, r"Movies_and_TV\.json:3: neither a 2014/2018 review"),
        ({**GOOD_2018, "overall": "five"}, r"Movies_and_TV\.json:3: overall must be a number"),
    ],
)
def test_amazon_errors_name_file_line_and_field(tmp_path, line, message):
    folder = write_reviews(tmp_path, [GOOD_2018, "", line])
    with pytest.raises(DataFormatError, match=message):
        load_amazon(folder, k=1)


def test_amazon_metadata_errors_and_an_empty_core(tmp_path):
    folder = write_reviews(tmp_path, [GOOD_2018])
    with pytest.raises(ValueError, match=r"none in the 2-core; lower k"):
        load_amazon(folder, k=2)
    (folder / "meta_Movies_and_TV.json").write_text('{"title": "The Matrix"}\n')
    with pytest.raises(DataFormatError, match=r"meta_Movies_and_TV\.json:1: missing field\(s\) \['asin'\]"):
        load_amazon(folder, k=1)
    (folder / "meta_Movies_and_TV.json").write_text("{'asin': 'B00003CXCT', 'title': 'The Matrix'}\n")
    assert load_amazon(folder, k=1).items["B00003CXCT"].title == "The Matrix"
    (folder / "meta_Movies_and_TV.json").write_text("{'asin': B00003CXCT}\n")
    with pytest.raises(DataFormatError, match=r"meta_Movies_and_TV\.json:1: not JSON"):
        load_amazon(folder, k=1)


# ---------------------------------------------------------------- ReDial


@pytest.fixture(scope="module")
def conversations():
    return read_conversations(REDIAL)


@pytest.fixture(scope="module")
def redial(conversations) -> Catalog:
    return redial_catalog(conversations)


def test_split_title():
    assert split_title("Police Academy  (1984)") == ("Police Academy", "1984")
    assert split_title("Star Wars") == ("Star Wars", "")
    assert split_title("(500) Days of Summer (2009)") == ("(500) Days of Summer", "2009")
    assert split_title("(2009)") == ("(2009)", "")


def test_redial_catalog_holds_the_mentioned_movies_and_the_seekers_interactions(redial):
    assert redial.name == "redial" and load_redial(REDIAL) == redial
    assert list(redial.users) == ["12", "78", "90", "34"]  # seekers; 90 mentioned no movie
    assert len(redial.items) == 12
    assert redial.items["151656"] == Item("151656", "Police Academy", "1984")
    assert redial.items["99582"] == Item("99582", "Star Wars", "")
    got = [(it.user_id, it.item_id, it.rating, it.timestamp) for it in redial.interactions]
    assert got == [
        # 20001: the two the seeker names, then Hot Fuzz, suggested and liked; not Police Academy
        # (suggested, disliked, never named by the seeker).
        ("12", "111776", 5.0, 0.0), ("12", "91481", 5.0, 1.0), ("12", "134643", 5.0, 2.0),
        # 20002: "It" is liked on the recommender's form only (the seeker's lacks it).
        ("12", "204974", 5.0, 1000.0), ("12", "187028", 5.0, 1001.0),
        ("78", "99582", 3.0, 2000.0), ("78", "204974", 3.0, 2001.0),  # 20003: "liked" 2, not said
        ("78", "134643", 5.0, 4000.0), ("78", "111776", 5.0, 4001.0), ("78", "176357", 5.0, 4002.0),
        ("34", "204334", 5.0, 5000.0), ("34", "115908", 1.0, 5001.0), ("34", "161313", 5.0, 5002.0),
    ]


def test_redial_dialogue_tasks_follow_the_documented_rules(conversations, redial):
    tasks = dialogue_tasks(conversations, redial, num_negatives=3, seed=0)
    by_id = {task.task_id: task for task in tasks}
    assert list(by_id) == ["redial:20001", "redial:20002", "redial:20005", "redial:20006"]  # 20003/4: no target
    expected = {
        "redial:20001": ("12", "134643", ("111776", "91481"), "Hi! I'm looking for a good comedy tonight."),
        "redial:20002": ("12", "187028", ("204974",), "Hey, I want something scary like The Shining"),
        # Hot Fuzz is suggested and liked, but before the seeker's first message.
        "redial:20005": ("78", "176357", ("111776",), "Yes! I loved it. Something like Super Troopers maybe?"),
        # Zootopia comes first in the same message but was disliked.
        "redial:20006": ("34", "161313", ("204334",), "My kids loved Finding Nemo , what else would they like?"),
    }
    mentioned = {c.conversation_id: set(c.titles) for c in conversations}
    seen = {}
    for it in redial.interactions:
        seen.setdefault(it.user_id, set()).add(it.item_id)
    for task_id, (user_id, target, history, opening) in expected.items():
        task = by_id[task_id]
        assert isinstance(task, DialogueTask)
        assert (task.user_id, task.target_item_id, task.history, task.opening) == (user_id, target, history, opening)
        assert len(task.candidate_item_ids) == 4 and len(set(task.candidate_item_ids)) == 4
        negatives = set(task.candidate_item_ids) - {target}
        assert negatives <= set(redial.items)
        assert not negatives & (mentioned[task_id.split(":")[1]] | seen[user_id])
        assert DialogueTask.from_json(json.loads(json.dumps(task.to_json()))) == task
    assert dialogue_tasks(conversations, redial, num_negatives=3, seed=0) == tasks
    reordered = dialogue_tasks(conversations[::-1], redial_catalog(conversations[::-1]), num_negatives=3, seed=0)
    assert sorted(reordered, key=lambda t: t.task_id) == tasks  # ids and samples do not depend on file order
    other_seeds = [dialogue_tasks(conversations, redial, num_negatives=3, seed=s) for s in (1, 2)]
    assert any(t != tasks for t in other_seeds)
    with pytest.raises(ValueError, match="20001.*num_negatives=19"):
        dialogue_tasks(conversations, redial)


def test_redial_catalog_makes_ranking_tasks_too(redial):
    tasks = build_tasks(redial, num_negatives=2, min_rating=4)
    assert [t.user_id for t in tasks] == ["12", "34", "78"]
    assert {t.user_id: t.target_item_id for t in tasks} == {"12": "187028", "34": "161313", "78": "176357"}


def write_dialogues(tmp_path: Path, lines: list) -> Path:
    path = tmp_path / "dialogues.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


GOOD_DIALOGUE = json.loads(REDIAL.open().readline())


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{'conversationId': '1'}", r"dialogues\.jsonl\.gz:2: not JSON"),
        ({k: v for k, v in GOOD_DIALOGUE.items() if k != "messages"}, r":2: missing field\(s\) \['messages'\]"),
        ({**GOOD_DIALOGUE, "conversationId": "9", "messages": [{"text": "hi"}]},
         r":2: message 1: missing field\(s\) \['senderWorkerId'\]"),
        ({**GOOD_DIALOGUE, "conversationId": "9", "movieMentions": "Up (2009)"}, r":2: movieMentions must be"),
        (GOOD_DIALOGUE, r":2: conversationId '20001' already used on line 1"),
    ],
)
def test_redial_errors_name_file_and_line(tmp_path, line, message):
    path = write_dialogues(tmp_path, [GOOD_DIALOGUE, line])
    with pytest.raises(DataFormatError, match=message):
        read_conversations(path)


def test_redial_missing_file(tmp_path):
    with pytest.raises(DataNotFoundError, match="nope.jsonl"):
        load_redial(tmp_path / "nope.jsonl")
    assert len(read_conversations(write_dialogues(tmp_path, [GOOD_DIALOGUE]))) == 1


# ---------------------------------------------------------------- MACRec's protocol


def test_min_rating_holds_out_the_last_well_rated_interaction():
    rows = [("1", "a", 5, 1), ("1", "b", 4, 2), ("1", "c", 2, 3), ("1", "d", 1, 4),  # last >= 4 is b
            ("2", "e", 5, 1), ("2", "f", 3, 2),  # only the first is >= 4: no task, all in train
            ("3", "g", 2, 1), ("3", "h", 4, 2)]
    interactions = [Interaction(u, i, float(r), float(t)) for u, i, r, t in rows]
    catalog = Catalog("toy", {u: User(u) for u in "123"}, {i: Item(i, i.upper()) for i in "abcdefghxyz"}, interactions)
    train, held_out = leave_last_out(interactions, min_rating=4)
    assert {u: it.item_id for u, it in held_out.items()} == {"1": "b", "3": "h"}
    assert pairs(train) == {("1", "a"), ("2", "e"), ("2", "f"), ("3", "g")}  # c, d come after b: not train
    tasks = build_tasks(catalog, num_negatives=3, min_rating=4)
    assert [(t.user_id, t.target_item_id, t.history) for t in tasks] == [("1", "b", ("a",)), ("3", "h", ("g",))]
    assert training_interactions(interactions, tasks) == train
    assert leave_last_out(interactions) == leave_last_out(interactions, min_rating=None)
    assert {u: it.item_id for u, it in leave_last_out(interactions)[1].items()} == {"1": "d", "2": "f", "3": "h"}


def test_macrec_protocol_on_ml100k(ml100k):
    tasks = build_tasks(ml100k, num_negatives=7, max_history=5, min_rating=4)
    rating = {(it.user_id, it.item_id): it.rating for it in ml100k.interactions}
    sequences: dict[str, list[Interaction]] = {}
    for it in sorted(ml100k.interactions, key=interaction_sort_key):
        sequences.setdefault(it.user_id, []).append(it)
    eligible = [u for u, seq in sequences.items() if any(it.rating >= 4 for it in seq[1:])]
    assert len(tasks) == len(eligible) > 900
    for task in tasks:
        assert len(task.candidate_item_ids) == 8 == len(set(task.candidate_item_ids))
        assert task.target_item_id in task.candidate_item_ids
        assert 0 < len(task.history) <= 5 and task.target_item_id not in task.history
        assert rating[(task.user_id, task.target_item_id)] >= 4
        sequence = [it.item_id for it in sequences[task.user_id]]
        position = max(n for n, it in enumerate(sequences[task.user_id]) if it.rating >= 4)
        assert sequence[position] == task.target_item_id
        assert task.history == tuple(sequence[max(0, position - 5):position])
        assert not (set(task.candidate_item_ids) - {task.target_item_id}) & set(sequence)
    assert training_interactions(ml100k.interactions, tasks) == leave_last_out(ml100k.interactions, min_rating=4)[0]
    # Every ml-100k rating is >= 1, so min_rating=1 is today's protocol, task for task.
    assert build_tasks(ml100k, num_negatives=7, max_history=5, min_rating=1) == build_tasks(
        ml100k, num_negatives=7, max_history=5)


# ---------------------------------------------------------------- launch: data.dataset and data.path


def test_launch_reads_amazon_and_redial_from_data_path(tmp_path, capsys):
    from launch.cli import main
    from launch.stages import load_catalog

    with pytest.raises(ValueError, match=r"data.dataset=amazon reads its data from data.path, which is empty"):
        load_catalog("amazon")
    with pytest.raises(ValueError, match=r"unknown dataset 'amazn'; available: \['amazon', 'ml-100k', 'redial'"):
        load_catalog("amazn")
    with pytest.raises(ValueError, match="reads no files"):
        load_catalog("synthetic", str(REDIAL))
    with pytest.raises(ValueError, match="none in the 5-core"):  # the default k; the fixture is too small
        load_catalog("amazon", str(AMAZON_2018))
    assert load_catalog("redial", str(REDIAL)) == load_redial(REDIAL)

    args = ["data", f"run_dir={tmp_path}", "data.dataset=redial", f"data.path={REDIAL}", "data.num_negatives=2",
            "data.min_rating=4", "logging.mode=disabled"]
    assert main(args) == 0
    eval_tasks = [json.loads(line) for line in (tmp_path / "data" / "eval_tasks.jsonl").open()]
    assert {t["user_id"]: t["target_item_id"] for t in eval_tasks} == {"12": "187028", "34": "161313", "78": "176357"}
    assert main(["data", f"run_dir={tmp_path / 'b'}", "data.dataset=redial", "logging.mode=disabled"]) == 1
    assert "set data.path=" in capsys.readouterr().err
