"""Odd but valid cohorts load and run: one image or 500 per patient, CSVs with CRLF, a BOM
and extra columns, IDs that look like numbers or formulas or HTML, no testset folder."""

import csv
import io
import shutil
import tempfile
import zipfile

import pandas as pd
import pytest

from lympho.cli import main
from lympho.data import load_cohort

ODD_IDS = {0: "007", 1: "<img src=x onerror=alert(1)>", 2: "=1+2", 3: "12.50", 4: "P 4 ü"}


@pytest.fixture
def odd_cohort(small_cohort):
    """The small synthetic cohort, rewritten: odd IDs, CRLF + BOM + extra columns, one patient
    with a single image and one with 500, and no testset/."""
    shutil.rmtree(small_cohort / "testset")
    train = small_cohort / "trainset"
    table = pd.read_csv(train / "trainset_true.csv", dtype=str)
    for row, new in ODD_IDS.items():
        (train / table.at[row, "ID"]).rename(train / new)
        table.at[row, "ID"] = new
    single, crowded = (train / table.at[5, "ID"]), (train / table.at[6, "ID"])
    for extra in sorted(single.iterdir())[1:]:
        extra.unlink()
    source = sorted(crowded.iterdir())[0]
    for i in range(500 - len(list(crowded.iterdir()))):
        shutil.copy(source, crowded / f"copy{i:03d}.jpg")
    table.insert(2, "COMMENT", "free text, with a comma")
    table["EXTRA"] = "x"
    text = table.to_csv(index=False, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    (train / "trainset_true.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    return small_cohort, table


def test_odd_cohort_loads_with_ids_as_written(odd_cohort):
    root, table = odd_cohort
    cohort = load_cohort(root)
    assert [p.id for p in cohort.patients] == table["ID"].tolist()
    sizes = {p.id: len(p.images) for p in cohort.patients}
    assert sizes[table.at[5, "ID"]] == 1 and sizes[table.at[6, "ID"]] == 500
    assert cohort.select("test") == []


def test_odd_cohort_trains_and_predicts_from_the_cli(odd_cohort, tmp_path, capsys):
    root, table = odd_cohort
    assert main(["evaluate", "--data", str(root), "--features", "clinical", "--classifier", "logreg"]) == 0
    assert main(["train", "--data", str(root), "--features", "clinical", "--out", str(tmp_path / "m")]) == 0
    assert main(["predict", "--data", str(root), "--model", str(tmp_path / "m"), "--split", "train",
                 "--in-sample", "--out", str(tmp_path / "p.csv")]) == 0
    capsys.readouterr()
    rows = list(csv.reader(io.StringIO((tmp_path / "p.csv").read_text())))
    ids = [r[0] for r in rows[1:]]
    assert ids[:5] == ["007", "<img src=x onerror=alert(1)>", "'=1+2", "12.50", "P 4 ü"]


def test_scoring_a_zip_writes_only_into_its_temporary_folder_and_removes_it(odd_cohort, tmp_path, monkeypatch,
                                                                            capsys):
    root, table = odd_cohort
    assert main(["train", "--data", str(root), "--features", "clinical", "--out", str(tmp_path / "m")]) == 0
    images = sorted((root / "trainset" / table.at[5, "ID"]).iterdir())
    archive = tmp_path / "patient.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for i, image in enumerate(images * 3):
            bundle.write(image, f"odd name {i} é\n.jpg")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["score", "--model", str(tmp_path / "m"), "--images", str(archive), "--gender", "F",
                 "--age", "70", "--lymph-count", "12"]) == 0
    assert "3 images" in capsys.readouterr().out
    assert list(scratch.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == before
