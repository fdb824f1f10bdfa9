"""The learned critic reward: it learns a score that text carries, round-trips through its files,
refuses bad records, and a Ray actor serves it in batches."""

import json
import random

import pytest

from rewards.critic_reward import CriticReward, CriticServer, SentenceEncoder, read_records, train_critic

POSITIVE = ["wonderful", "delightful", "brilliant", "moving", "a perfect pick", "exactly what I wanted"]
NEGATIVE = ["dull", "awful", "a waste of time", "boring", "not for me at all", "a terrible pick"]
TITLES = ["Toy Story", "Fargo", "Heat", "Casablanca", "Alien", "Clueless", "Vertigo", "Babe", "Psycho", "Jaws"]


def judged_dialogues(count: int, seed: int = 0) -> list[dict]:
    """Records whose score is the number of positive minus negative remarks: learnable from text alone."""
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        remarks = rng.sample(POSITIVE, rng.randint(0, 2)) + rng.sample(NEGATIVE, rng.randint(0, 2))
        rng.shuffle(remarks)
        score = sum(r in POSITIVE for r in remarks) - sum(r in NEGATIVE for r in remarks)
        said = " and ".join(remarks) or "fine, I guess"
        records.append({"text": f"Recommender: try {rng.choice(TITLES)}. Seeker: it was {said}.", "score": score})
    return records


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, encoder):
    records = judged_dialogues(300)
    path = tmp_path_factory.mktemp("critic") / "records.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    texts, scores = read_records(path)
    out = path.parent / "critic"
    return out, train_critic(texts, scores, out, encoder=encoder)


def test_the_critic_learns_a_score_the_text_carries(trained):
    _, metrics = trained
    assert metrics["num_held_out"] == 60 and metrics["held_out_pearson"] > 0.6, metrics


def test_a_saved_critic_scores_like_the_trained_one_and_ranks_praise_above_complaints(trained, encoder):
    out, _ = trained
    critic = CriticReward(out, encoder=encoder)
    praise, complaint = ("Recommender: try Heat. Seeker: it was brilliant and moving.",
                         "Recommender: try Heat. Seeker: it was awful and boring.")
    high, low = critic.score([praise, complaint])
    assert high > low + 1.0 and critic.score([]) == []


def test_bad_records_and_missing_critics_get_clear_errors(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"text": "a", "score": 1}\n{"text": "b"}\n')
    with pytest.raises(ValueError, match="records.jsonl:2: not a"):
        read_records(path)
    path.write_text('{"text": "a", "score": NaN}\n')
    with pytest.raises(ValueError, match="finite number"):
        read_records(path)
    with pytest.raises(FileNotFoundError, match="no critic records"):
        read_records(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError, match="recrl critic train"):
        CriticReward(tmp_path)


@pytest.mark.integration
def test_a_ray_actor_batches_concurrent_requests(trained, ray_local):
    from rollout.actors import release, spawn

    out, _ = trained
    server = spawn(CriticServer, 1, str(out), max_wait_s=0.2)[0]
    try:
        requests = [[f"Recommender: try {title}. Seeker: it was {word}."] for title in TITLES[:4]
                    for word in ("brilliant", "awful")]
        refs = [server.submit(CriticServer.score, texts) for texts in requests]
        scores = ray_local.get(refs)
        direct = CriticReward(out).score([texts[0] for texts in requests])
        assert [s[0] for s in scores] == pytest.approx(direct, abs=1e-4)
        assert server.stats()["batches"] < len(requests)
    finally:
        release([server])


def test_judge_records_keep_the_scored_replies_and_count_the_rest():
    from rewards.judge import JUDGE_SYSTEM, judge_records

    seen = []

    def generate(conversations):
        seen.extend(conversations)
        return ["Score: 8" if "thanks" in c[-1]["content"] else "I cannot say" for c in conversations]

    records, unscored = judge_records(["user: thanks!", "user: meh", "user: thanks, great"], generate, batch_size=2)
    assert records == [{"text": "user: thanks!", "score": 8.0}, {"text": "user: thanks, great", "score": 8.0}]
    assert unscored == 1 and len(seen) == 3 and seen[0][0] == {"role": "system", "content": JUDGE_SYSTEM}


def test_the_cli_labels_episodes_by_outcome_and_by_a_judge_then_trains(tmp_path, capsys):
    import datasets

    from envs.types import Trajectory, Turn
    from launch.cli import main

    episodes = [Trajectory(task_id=str(i), env_id="SequentialRec-v0", source="teacher", reward=float(i % 3),
                           rewards={"tiered_hit": i % 3 / 2}, turns=[Turn("system", "rules"), Turn("user", f"User {i}."),
                                                                     Turn("teacher", "<recommend>1</recommend>")])
                for i in range(6)]
    folder = tmp_path / "dataset"
    datasets.Dataset.from_list([t.to_row() for t in episodes]).save_to_disk(str(folder))
    out = tmp_path / "records.jsonl"
    assert main(["critic", "label", str(folder), "--out", str(out), "--reward", "tiered_hit"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["score"] for r in records] == [0.0, 0.5, 1.0, 0.0, 0.5, 1.0]
    assert records[1]["text"] == "user: User 1.\nteacher: <recommend>1</recommend>"
    assert main(["critic", "label", str(folder), "--out", str(out), "--reward", "format"]) == 1
    assert "has no 'format' reward" in capsys.readouterr().err
    # A random-init judge rarely writes a score; the command says how many it got.
    assert main(["critic", "label", str(folder), "--out", str(tmp_path / "judged.jsonl"), "--judge", "tiny-random"]) == 0
    assert "the judge scored" in capsys.readouterr().out
    records_path = tmp_path / "learnable.jsonl"
    records_path.write_text("\n".join(json.dumps(r) for r in judged_dialogues(40)))
    assert main(["critic", "train", str(records_path), "--out", str(tmp_path / "critic"), "--epochs", "50"]) == 0
    assert (tmp_path / "critic" / "critic.safetensors").is_file() and "held_out_pearson" in capsys.readouterr().out


def test_a_run_scores_its_batches_with_the_critic_named_in_its_reward_weights(trained, tmp_path):
    from envs.types import Trajectory, Turn
    from launch.config import load_config
    from launch.stages import model_rewards
    from rewards import score_batch

    out, _ = trained
    weights = '{format: 1.0, critic: 0.5}'
    config = load_config(None, [f"run_dir={tmp_path}", "rollout.num_workers=0", f"reward.weights={weights}",
                                f"reward.critic_dir={out}"])
    batch_rewards, servers = model_rewards(config)
    batch = [Trajectory(task_id=str(i), env_id="e", source="s", format_valid=True,
                        turns=[Turn("policy", "Recommender: try Heat."), Turn("user", f"Seeker: it was {said}.")])
             for i, said in enumerate(["brilliant and moving", "awful and boring"])]
    score_batch(batch, config.reward.weights, batch_rewards=batch_rewards)
    assert servers == [] and batch[0].rewards["critic"] > batch[1].rewards["critic"] + 1.0
    assert batch[0].reward == pytest.approx(1.0 + 0.5 * batch[0].rewards["critic"])
    with pytest.raises(ValueError, match="set reward.critic_dir"):
        model_rewards(load_config(None, [f"reward.weights={weights}"]))
    with pytest.raises(ValueError, match="the run provides no such model"):
        score_batch(batch, config.reward.weights)
