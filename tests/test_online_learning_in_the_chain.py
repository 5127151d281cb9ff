"""The online learner inside ``streamquant run``: on by default, off with
``--no-online-learning``, counted in the summary from what ``models.updates`` carries.

Real replays of the bundled E-mini sample (``tests._replay_fixture``): ``default`` is the run
a user gets, ``frozen`` the same with ``--no-online-learning``.
"""

from __future__ import annotations

from collections import Counter

from tests._replay_fixture import ReplayPool, pool_fixture
from topics.messages import ModelUpdate, Prediction

replays = pool_fixture()


def test_frozen_run_has_the_pre_issue_12_figures_and_no_online_output(replays: ReplayPool
                                                                      ) -> None:
    """Without the learner the replay gives the figures the golden replay pinned before
    issue 12: the off switch leaves no trace in the chain."""
    run = replays.get("frozen")
    s = run.summary
    assert (s["orders"], s["fills"], s["rejects_by_code"], s["pnl"], s["fees"],
            s["cost_gated"]) == (15, 29, {"CONCENTRATION_LIMIT": 7}, -134.0, 34.0, 1_138)
    assert "online_updates" not in s
    assert not (run.out / "topics" / "models.updates.jsonl").exists()
    preds: list[Prediction] = run.topic("predictions")
    assert preds and all(p.model != "online" for p in preds)


def test_summary_counts_equal_the_events_on_models_updates(replays: ReplayPool) -> None:
    run = replays.get("default")
    s = run.summary
    updates: list[ModelUpdate] = run.topic("models.updates")
    kinds = Counter(u.update_type for u in updates)
    assert (s["online_updates"], s["drift_alarms"], s["rollbacks"], s["promotions"]) == (
        kinds["incremental"], kinds["drift"], kinds["rollback"], kinds["promotion"])
    assert kinds["incremental"] > 0
    last = [u for u in updates if u.update_type != "drift"][-1]
    m = s["online_models"][last.model_id]
    assert m["prequential_accuracy"] == last.metrics["prequential_accuracy"]
    assert m["labels"] == last.metrics["labels"]
    # the decision chain used it: online predictions reach the blend's weights
    preds = [p for p in run.topic("predictions") if p.model == "online"]
    assert len(preds) > 2000
    assert {p.model_version for p in preds} <= {u.update_id for u in updates} | {"online:ES#0"}


def test_the_cli_flag_turns_the_learner_off_and_it_is_on_by_default() -> None:
    from jobs.cli import build_parser
    from jobs.options import ReplayOptions

    parser = build_parser()
    on = ReplayOptions.from_args(parser.parse_args(["run", "--out", "o"]))
    off = ReplayOptions.from_args(parser.parse_args(["run", "--out", "o",
                                                     "--no-online-learning"]))
    assert (on.online_learning, off.online_learning) == (True, False)
