"""The run's online-learning figures, read off ``models.updates`` after the replay.

Counts of each event kind (the ``--summary-json`` keys ``online_updates``, ``drift_alarms``,
``rollbacks``, ``promotions``) and, per online model, the prequential scores of its last
update batch: accuracy and log loss over the whole run, the always-majority baseline's
accuracy on the same labels and the frozen champion's, so a reader sees at once whether the
online model learned anything the majority class does not give for free.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from topics.messages import ModelUpdate

_KEYS = ("labels", "learned", "prequential_accuracy", "prequential_log_loss",
         "prequential_majority", "prequential_champion_accuracy")


def online_figures(updates: Iterable[ModelUpdate]) -> dict[str, Any]:
    counts = {"incremental": 0, "drift": 0, "rollback": 0, "promotion": 0}
    last: dict[str, dict[str, float]] = {}
    for u in updates:
        counts[u.update_type] = counts.get(u.update_type, 0) + 1
        if u.update_type != "drift":
            last[u.model_id] = {k: u.metrics[k] for k in _KEYS if k in u.metrics}
    return {"online_updates": counts["incremental"], "drift_alarms": counts["drift"],
            "rollbacks": counts["rollback"], "promotions": counts["promotion"],
            "online_models": dict(sorted(last.items()))}


def print_online(r: dict[str, Any]) -> None:
    """The report's online-learning section (nothing when the run learned nothing)."""
    if "online_updates" not in r:
        return
    print("online learning (models.updates)")
    print(f"  update batches  {r['online_updates']:>12,}   drift alarms {r['drift_alarms']:,}, "
          f"rollbacks {r['rollbacks']:,}, promotions {r['promotions']:,}")
    for model_id, m in r["online_models"].items():
        champ = m.get("prequential_champion_accuracy")
        vs = f", champion {champ:.1%}" if champ is not None else ""
        print(f"  {model_id:<15} accuracy {m.get('prequential_accuracy', 0.0):.1%} "
              f"(majority {m.get('prequential_majority', 0.0):.1%}{vs}), log loss "
              f"{m.get('prequential_log_loss', 0.0):.4f} over {int(m.get('labels', 0)):,} labels")
