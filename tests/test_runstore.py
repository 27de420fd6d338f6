"""The run tracker: de-duplication, names, tags, notes, deletion, the table, and the CLI over them."""

import dataclasses

import pytest

from lympho.cli import main
from lympho.data import load_cohort
from lympho.evaluation import format_estimate, run_estimates
from lympho.experiment import ExperimentConfig, run_experiment
from lympho.runstore import RunNotFound, RunStore, differing_fields, tracker_table

CLINICAL = ExperimentConfig(features="clinical", classifier="logreg")


@pytest.fixture(scope="module")
def runs(small_cohort_template):
    cohort = load_cohort(small_cohort_template)
    return [run_experiment(cohort, CLINICAL), run_experiment(cohort, dataclasses.replace(CLINICAL, seed=1))]


def test_identical_config_data_and_seed_is_stored_once(runs, tmp_path):
    store = RunStore(tmp_path / "runs")
    first = store.save(runs[0])
    store.rename(first, "baseline")
    store.tag(first, add=["keep"])
    again = store.save({**runs[0], "created": "2030-01-01T00:00:00"})  # re-running the same experiment
    other = store.save(runs[1])  # another seed is another run
    assert again == first and other != first and store.ids() == sorted([first, other])
    kept = store.load(first)
    assert kept["name"] == "baseline" and kept["tags"] == ["keep"] and "updated" in kept
    (tmp_path / "runs" / "broken.json").write_text("{not json")
    assert [r["id"] for r in store.runs()] == sorted([first, other])


def test_tags_notes_rename_delete(runs, tmp_path):
    store = RunStore(tmp_path / "runs")
    run_id = store.save(runs[0])
    assert store.tag(run_id, add=["a", "b", "a"])["tags"] == ["a", "b"]
    assert store.tag(run_id, remove=["a"])["tags"] == ["b"]
    with pytest.raises(ValueError, match="no spaces"):
        store.tag(run_id, add=["two words"])
    assert store.note(run_id, "  shown at the lab meeting ")["note"] == "shown at the lab meeting"
    assert store.rename(run_id, "")["name"] is None
    store.delete(run_id)
    assert store.ids() == []
    with pytest.raises(RunNotFound):
        store.delete(run_id)
    with pytest.raises(RunNotFound, match="not a run id"):
        store.load("../escape")


def test_tracker_table_puts_metrics_first_and_keeps_differing_fields(runs):
    assert differing_fields(runs) == ["seed"]
    table = tracker_table(runs)
    assert list(table.columns[:3]) == ["name", "balanced_accuracy", "f1"]
    assert [c for c in table.columns if c.startswith("config.")] == ["config.seed"]
    assert table["balanced_accuracy"].dtype.kind == "f"  # numbers, so the column sorts
    assert (table["balanced_accuracy_ci_low"] < table["balanced_accuracy_ci_high"]).all()  # every figure, its interval
    assert "config.classifier" in tracker_table(runs, all_fields=True).columns
    assert table["balanced_accuracy_at_op"].isna().all()  # one repeat: no threshold can be held out


def test_runs_of_several_repeats_keep_where_a_trained_model_would_decide(small_cohort_template):
    from lympho.evaluation import threshold_from_repeats
    from lympho.reports import runs_table

    run = run_experiment(load_cohort(small_cohort_template), dataclasses.replace(CLINICAL, repeats=3))
    point = run["summary"]["operating_point"]
    assert point == threshold_from_repeats(run["oof"], 0.95)  # the threshold a trained model stores, held out
    at_point = point["estimate"]["metrics"]["balanced_accuracy"]
    assert tracker_table([run])["balanced_accuracy_at_op"].iloc[0] == at_point["estimate"]
    exported = runs_table([run]).iloc[0]
    assert (exported["threshold_at_op"], exported["balanced_accuracy_at_op_ci_low"]) == \
        (point["threshold"], at_point["low"])


def test_cli_does_what_the_page_does(runs, tmp_path, capsys):
    store = RunStore(tmp_path / "runs")
    first, second = store.save(runs[0]), store.save(runs[1])

    def cli(*argv):
        code = main([*argv, "--cache-dir", str(tmp_path)])
        out = capsys.readouterr()
        return code, out.out + out.err

    assert cli("runs", "rename", first, "my baseline")[0] == 0
    assert cli("runs", "tag", first, "--add", "paper")[1].strip().endswith("tags paper")
    assert cli("runs", "note", first, "for the slides")[0] == 0
    code, out = cli("runs", "list", "--tag", "paper")
    assert code == 0 and "my baseline" in out and second not in out
    code, out = cli("runs", "show", first)
    assert "note: for the slides" in out and "mean ± std over folds" in out
    estimates = run_estimates(store.load(first))  # the headline with its interval, as on the pages
    assert f"balanced_accuracy: {format_estimate(estimates, 'balanced_accuracy')}" in out
    assert cli("runs", "delete", second)[0] == 0 and store.ids() == [first]
    code, out = cli("runs", "show", "nope")
    assert code == 2 and "no stored run 'nope'" in out


def test_saving_reads_only_runs_written_since_the_last_save(runs, tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs")
    first, second = (store.save(run) for run in runs[:2])
    loads = []
    real_load = RunStore.load
    monkeypatch.setattr(RunStore, "load", lambda self, run_id: loads.append(run_id) or real_load(self, run_id))
    assert store.save(dict(runs[0], rerun=True)) == first  # found through the index
    assert loads == [first]  # the match itself, to keep its name, tags and note: no other run parsed
    (tmp_path / "runs" / f"{first}.json").unlink()  # deleted behind the store's back
    (tmp_path / "runs" / ".fingerprint-index").write_text("{damaged")
    assert store.save(runs[0]) == first and len(store.ids()) == 2  # stored anew, under its free id
    assert "rerun" not in store.load(first)
