"""The loader: exact for the challenge layout, its quirks, and every refusal."""

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lympho.data import (REFERENCE_DATE, CohortError, clinical_matrix, load_cohort, parse_dob,
                         resolve_cohort)

TRAIN_CSV = Path("trainset/trainset_true.csv")


def edit_csv(root: Path, line: int, field: str, value: str, csv: Path = TRAIN_CSV) -> None:
    table = pd.read_csv(root / csv, dtype=str, keep_default_na=False)
    table.loc[line - 2, field] = value
    table.to_csv(root / csv, index=False)


def first_train_id(root: Path) -> str:
    return pd.read_csv(root / TRAIN_CSV, dtype=str)["ID"].iloc[0]


def test_real_cohort_loads_exactly(real_data):
    cohort = load_cohort(real_data)
    train, test = cohort.select("train"), cohort.select("test")
    assert (len(train), len(test)) == (110, 10)
    assert sorted(p.label for p in train).count(1) == 76
    assert all(p.label == -1 for p in test) and cohort.labelled() == train
    assert sum(len(p.images) for p in cohort.patients) == 9746
    by_id = {p.id: p for p in cohort.patients}
    assert by_id["P183"].dob == date(1942, 5, 15) and by_id["P183"].gender == "M"
    dashed = pd.read_csv(real_data / TRAIN_CSV, dtype=str).query("DOB.str.contains('-')").iloc[0]
    day, month, year = map(int, dashed["DOB"].split("-"))
    assert by_id[dashed["ID"]].dob == date(year, month, day)
    # Counts below the 4 x 10^9/L inclusion threshold are real data, kept as they are.
    assert min(p.lymph_count for p in cohort.patients) == pytest.approx(3.94)
    assert all(0 < p.age < 110 for p in cohort.patients)
    assert not cohort.synthetic and cohort.warnings == []


def test_date_formats_and_reference_age():
    assert parse_dob("11/3/1933") == date(1933, 11, 3)
    assert parse_dob("28-04-1943") == date(1943, 4, 28)
    assert parse_dob("1950-01-01") == date(1950, 1, 1)
    with pytest.raises(CohortError, match="unparseable date"):
        parse_dob("1943/28/04")
    assert REFERENCE_DATE == date(2020, 1, 1)


def test_lowercase_gender_is_accepted(small_cohort):
    edit_csv(small_cohort, 2, "GENDER", "f")
    assert load_cohort(small_cohort).patients[0].gender == "F"


def test_clinical_matrix_log_count(small_cohort):
    patients = load_cohort(small_cohort).labelled()
    logged, raw = clinical_matrix(patients, True), clinical_matrix(patients, False)
    np.testing.assert_allclose(np.exp(logged[:, 2]), raw[:, 2])
    assert set(np.unique(raw[:, 1])) <= {0.0, 1.0}


@pytest.mark.parametrize("field, value, message", [
    ("DOB", "31/31/1950", "unparseable date"),
    ("LYMPH_COUNT", "many", "non-numeric lymphocyte count"),
    ("LYMPH_COUNT", "0", "must be positive"),
    ("LYMPH_COUNT", "-3.2", "must be positive"),
    ("GENDER", "X", "unknown gender"),
    ("LABEL", "2", "label must be 0, 1 or -1"),
])
def test_bad_values_are_refused_with_file_line_field(small_cohort, field, value, message):
    edit_csv(small_cohort, 4, field, value)
    with pytest.raises(CohortError, match=message) as caught:
        load_cohort(small_cohort)
    error = caught.value
    assert (Path(error.path), error.line, error.field) == (small_cohort / TRAIN_CSV, 4, field)
    assert f"trainset_true.csv, line 4, field {field}" in str(error)


def test_missing_directory_and_layout(tmp_path, small_cohort):
    with pytest.raises(CohortError, match="data directory not found"):
        load_cohort(tmp_path / "nowhere")
    with pytest.raises(CohortError, match="missing trainset/"):
        load_cohort(tmp_path)
    (small_cohort / TRAIN_CSV).unlink()
    with pytest.raises(CohortError, match="missing clinical CSV"):
        load_cohort(small_cohort)


def test_missing_column(small_cohort):
    table = pd.read_csv(small_cohort / TRAIN_CSV, dtype=str).drop(columns="DOB")
    table.to_csv(small_cohort / TRAIN_CSV, index=False)
    with pytest.raises(CohortError, match="missing column.*DOB") as caught:
        load_cohort(small_cohort)
    assert caught.value.line == 1


def test_duplicate_ids(small_cohort):
    edit_csv(small_cohort, 5, "ID", first_train_id(small_cohort))
    with pytest.raises(CohortError, match="duplicate patient ID") as caught:
        load_cohort(small_cohort)
    assert caught.value.line == 5 and "first on line 2" in str(caught.value)


def test_patient_without_folder_or_images(small_cohort):
    pid = first_train_id(small_cohort)
    folder = small_cohort / "trainset" / pid
    for image in folder.iterdir():
        image.unlink()
    (folder / ".DS_Store").write_bytes(b"\0\1junk")
    (folder / "Thumbs.db").write_bytes(b"junk")
    with pytest.raises(CohortError, match="image folder is empty"):
        load_cohort(small_cohort)
    folder.joinpath(".DS_Store").unlink()
    folder.joinpath("Thumbs.db").unlink()
    folder.rmdir()
    with pytest.raises(CohortError, match=f"patient {pid} has no image folder") as caught:
        load_cohort(small_cohort)
    assert caught.value.line == 2


def test_unreadable_image_is_named(small_cohort):
    bad = sorted((small_cohort / "trainset" / first_train_id(small_cohort)).iterdir())[0]
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(CohortError, match="not a readable image") as caught:
        load_cohort(small_cohort)
    assert Path(caught.value.path) == bad


def test_hidden_files_ignored_and_any_image_accepted(small_cohort):
    folder = small_cohort / "trainset" / first_train_id(small_cohort)
    before = len(list(folder.glob("*.jpg")))
    (folder / ".DS_Store").write_bytes(b"junk")
    (folder / "Thumbs.db").write_bytes(b"junk")
    Image.new("L", (100, 80), 128).save(folder / "extra.png")
    Image.new("RGBA", (300, 300), (10, 20, 30, 255)).save(folder / "extra2.png")
    patient = load_cohort(small_cohort).patients[0]
    assert len(patient.images) == before + 2
    assert {p.suffix for p in patient.images} == {".jpg", ".png"}


def test_unlisted_folder_is_a_warning(small_cohort):
    (small_cohort / "trainset" / "P999").mkdir()
    assert "P999" in load_cohort(small_cohort).warnings[0]


def test_demo_is_the_default(monkeypatch, isolated_cache):
    cohort = resolve_cohort(None)
    assert cohort.synthetic and "synthetic" in cohort.name
    assert cohort.root.parent == isolated_cache
    assert len(cohort.labelled()) > 20 and cohort.select("test")
