"""`recrl report`: the static HTML page of a run, opened in headless Chromium.

The run folder is made by the project's own commands (`recrl data`, `recrl eval`, `recrl compare`) on
the synthetic catalog, plus training curves logged through the Tracker, a best-of-k curve from
`best_of_k_metrics` and a teacher dataset written by `write_dataset`, which leads with a
several-agent episode whose text is hostile HTML.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from envs.parsing import parse_action
from envs.types import RankingOutcome, Trajectory, Turn
from launch.cli import main as recrl
from launch.report import add_parser, build_report, main as report_main
from rl.best_of_k import best_of_k_metrics
from rl.tables import trajectory_rows
from rl.tracking import Tracker

SLICE = ["data.dataset=synthetic", "data.num_negatives=4", "env.tools=[sequential]", "env.max_turns=3",
         "teacher.tools=[sequential]", "teacher.num_recommend=2", "teacher.validation_tasks=30",
         "sequential.epochs=5", "sequential.hidden=16", "eval.num_tasks=12", "logging.mode=disabled"]
HOSTILE = '<script>alert("pwned")</script><img src=x onerror=alert(1)></pre></li></ol><a href="https://evil.example">'
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    """Chromium's path; fails in CI (`make setup` installs it), else skips."""
    path = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if path is None:
        message = "no chromium on PATH: install it with `bash launch/install_chromium.sh`"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_chromium(url: str, profile: Path, *extra: str) -> str:
    result = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class Elements(HTMLParser):
    """Every element of a document as ``(tag, attributes)``, and its text."""

    def __init__(self, document: str):
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(document)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, {name: value or "" for name, value in attrs}))

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.elements if t == tag and all(v in a.get(k, "").split() for k, v in attrs.items())]


def several_agent_episode() -> Trajectory:
    """An alpha-UMi-shaped episode (planner, caller, summarizer) whose model text is hostile HTML."""
    planner = f"<plan>Read the sequential signal. {HOSTILE} Next: caller</plan>"
    caller = '<tool_call>{"name": "sequential", "arguments": {"user_id": "u1"}}</tool_call>'
    summarizer = "<reflection>i1 leads.</reflection><recommend>i1, i2</recommend>"
    turns = [Turn("system", "You rank candidate items."), Turn("user", f"User u1. Candidates: i1, i2. {HOSTILE}"),
             Turn("planner", planner, action=parse_action(planner, plan_only=True)),
             Turn("user", "Next: caller"),
             Turn("caller", caller, action=parse_action(caller)),
             Turn("tool", f"<tool_response>sequential ranking for user u1: i1:100, i2:40 {HOSTILE}</tool_response>"),
             Turn("summarizer", summarizer, reward=1.0, action=parse_action(summarizer))]
    return Trajectory(task_id="u1", env_id="SequentialRec-v0", source="teacher:alpha_umi", turns=turns,
                      outcome=RankingOutcome(("i1", "i2"), 1), format_valid=True, terminated=True)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run that taught, trained and evaluated: real eval, compare, samples; logged curves."""
    from teachers.pipeline import write_dataset

    run = tmp_path_factory.mktemp("report") / "run"
    assert recrl(["data", f"run_dir={run}", *SLICE]) == 0
    with Tracker(project="recrl", run_dir=run, config={}, enabled=False) as tracker:
        for step in range(1, 13):
            tracker.log({"train/loss": 1.0 / step, "train/grad_norm": 0.5, "train/epoch": step / 12}, step=step)
        for step in range(1, 7):
            tracker.log({"reward/total": 0.2 + 0.1 * step, "reward/format": 0.5, "reward/tiered_hit": 0.1 * step,
                         "train/loss": 0.01, "train/kl": 0.002 * step, "rollout/format_rate": 0.9}, step=step)
    assert recrl(["eval", f"run_dir={run}", *SLICE, "eval.methods=[random,pop,itemknn,teacher]",
                  "eval.sample_trajectories=3"]) == 0
    assert recrl(["compare", str(run), "teacher-pop", "teacher-itemknn", "--resamples", "500", "--markdown"]) == 0
    report = json.loads((run / "eval.json").read_text())
    report["best_of_k"] = {"student_sft": best_of_k_metrics([[1, 3, 2, None], [4, None, 1, 2], [2, 2, 5, 1]],
                                                            ks=[1, 2, 4])}
    (run / "eval.json").write_text(json.dumps(report))
    teacher_episodes = [Trajectory.from_row(json.loads(line))
                        for line in (run / "samples" / "teacher.jsonl").read_text().splitlines()]
    write_dataset([several_agent_episode(), *teacher_episodes], run / "teacher" / "dataset")
    return run


@pytest.mark.integration
@pytest.mark.slow
def test_eval_saves_the_sample_episodes_it_tables_in_full(run_dir):
    episodes = [Trajectory.from_row(json.loads(line))
                for line in (run_dir / "samples" / "teacher.jsonl").read_text().splitlines()]
    table = run_dir / "tables" / "eval" / "samples_teacher-1.jsonl"
    rows = [json.loads(line) for line in table.read_text().splitlines()]
    assert len(episodes) == len(rows) == 3
    assert all(e.turns[0].role == "system" and any(t.is_agent for t in e.turns) for e in episodes)
    for episode, row in zip(episodes, rows):  # the same episodes as the table: the rows recomputed match
        (recomputed,) = trajectory_rows([episode], 1)
        assert {k: v for k, v in recomputed.items() if k != "target"} == {k: v for k, v in row.items() if k != "target"}
    ranks = json.loads((run_dir / "eval.json").read_text())["ranks"]["teacher"]
    assert [e.rank for e in episodes] == ranks[:3]


@pytest.mark.integration
@pytest.mark.slow
def test_report_opens_offline_in_chromium_with_its_key_parts(run_dir, tmp_path):
    index = build_report(run_dir, episodes=2)
    assert index == run_dir / "report" / "index.html"
    page = index.read_text()
    # Offline and inert: no script, frame or stylesheet; every address a file beside the page or an anchor in it.
    source = Elements(page)
    assert not any(source.find(tag) for tag in ("script", "link", "iframe", "object", "embed", "base"))
    addresses = [value for _, attrs in source.elements for name, value in attrs.items() if name in ("src", "href")]
    assert addresses and not [a for a in addresses if re.match(r"[a-z][a-z0-9+.-]*:|//", a, re.IGNORECASE)]
    styles = re.findall(r"<style>(.*?)</style>", page, re.DOTALL) + [a.get("style", "") for _, a in source.elements]
    assert not [s for s in styles if re.search(r"url\(|@import", s)]

    dom = Elements(run_chromium(index.as_uri(), tmp_path / "profile", "--dump-dom"))
    assert not dom.find("script") and not dom.find("a", href="https://evil.example")
    assert all("onerror" not in attrs for _, attrs in dom.elements)
    assert 'alert("pwned")' in "".join(dom.text)  # the hostile text is shown, as text
    assert not dom.find("li", **{"class": "missing"}), [a for t, a in dom.elements if "missing" in a.get("class", "")]
    # The evaluation table against the baselines, with an interval cell; the paired intervals.
    assert dom.find("table", id="eval-table") and dom.find("td", **{"class": "ci"})
    assert "teacher − pop" in "".join(dom.text) and dom.find("table", id="compare-table")
    # Learning curves and best-of-k: PNGs beside the page, decoded by the browser.
    sources = sorted(img["src"] for img in dom.find("img"))
    assert sources == ["best_of_k.png", "curve_kl.png", "curve_reward.png", "curve_rl_loss.png",
                       "curve_rollouts.png", "curve_sft_loss.png"]
    probe = index.parent / "probe.html"  # a page of the same images reporting their decoded widths
    probe.write_text("".join(f'<img src="{s}">' for s in sources) + "<script>window.onload = () => document.body"
                     ".setAttribute('data-widths', [...document.images].map(i => i.naturalWidth).join(','))</script>")
    (body,) = Elements(run_chromium(probe.as_uri(), tmp_path / "profile", "--dump-dom")).find("body")
    probe.unlink()
    assert all(int(width) > 300 for width in body["data-widths"].split(",")), body
    # Conversations: every speaker of the several-agent episode, each agent and tool in its own colour.
    turns = dom.find("li", **{"class": "turn"})
    colours = {t["data-role"]: re.search(r"--c:(#[0-9a-f]{6})", t["style"]).group(1) for t in turns}
    assert {"system", "user", "tool", "planner", "caller", "summarizer", "cf_expert"} <= set(colours)
    assert len({colours[r] for r in ("planner", "caller", "summarizer", "cf_expert", "user")}) == 5
    tool_blocks = dom.find("div", **{"class": "tool-block", "data-tool": "sequential"})
    tool_colours = {re.search(r"--c:(#[0-9a-f]{6})", block["style"]).group(1) for block in tool_blocks}
    assert len(tool_colours) == 1 and not tool_colours & set(colours.values())

    screenshot = tmp_path / "report.png"
    run_chromium(index.as_uri(), tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1280,2000",
                 "--hide-scrollbars")
    from PIL import Image

    with Image.open(screenshot) as image:
        assert image.format == "PNG" and image.size == (1280, 2000)
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 200  # text, tables, plots; not a blank page
    assert screenshot.stat().st_size > 50_000


def test_a_run_with_only_metrics_names_what_is_missing(tmp_path, capsys):
    run = tmp_path / "run"
    with Tracker(project="recrl", run_dir=run, config={}, enabled=False) as tracker:
        for step in range(1, 6):
            tracker.log({"train/loss": 1.0 / step, "train/epoch": step / 5}, step=step)
    with (run / "metrics.jsonl").open("a") as file:
        file.write('{"step": 6, "train/lo')  # killed while writing
    parser = argparse.ArgumentParser(prog="recrl")
    add_parser(parser.add_subparsers(dest="command"))
    assert report_main(parser.parse_args(["report", str(run), "--out", str(tmp_path / "out")])) == 0
    assert str(tmp_path / "out" / "index.html") in capsys.readouterr().out

    page = Elements((tmp_path / "out" / "index.html").read_text())
    text = "".join(page.text)
    for named in ("no eval.json", "recrl eval", "no compare.json", "recrl compare", "best-of-k", "no sample episodes",
                  "no teacher/dataset", "recrl teach", "no config."):
        assert named in text, named
    assert len(page.find("li", **{"class": "missing"})) == 6 and len(page.find("li", **{"class": "present"})) == 1
    assert [img["src"] for img in page.find("img")] == ["curve_sft_loss.png"]
    assert (tmp_path / "out" / "curve_sft_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "1 unreadable line(s) of metrics.jsonl skipped" in text


def test_a_damaged_file_spoils_only_its_section(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval.json").write_text('{"methods": {"pop": {"hr@1": 0.5}')  # cut short
    (run / "compare.json").write_text(json.dumps({"comparisons": [{"a": "x"}]}))  # no metrics
    (run / "config.eval.yaml").write_text(f"run_dir: runs/x  # {HOSTILE}\n")
    page = build_report(run).read_text()
    assert page.count("could not be read (JSONDecodeError") == 4  # evaluation and best-of-k name it, twice each
    assert "could not be read (KeyError" in page and "&lt;script&gt;alert" in page and "<script" not in page

    parser = argparse.ArgumentParser(prog="recrl")
    add_parser(parser.add_subparsers(dest="command"))
    assert report_main(parser.parse_args(["report", str(tmp_path / "nowhere")])) == 1
    assert "no run folder at" in capsys.readouterr().err
