"""The loader: exact for the challenge layout, its quirks, and every refusal."""

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lympho.data import (REFERENCE_DATE, CohortError, age_at, check_sampling_date, check_sensitivity,
                         check_setting, check_threshold, clinical_matrix, load_cohort, parse_dob, parse_id,
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
    # values that parse but cannot be right
    ("LYMPH_COUNT", "5000", "at most 1000"),
    ("LYMPH_COUNT", "inf", "finite"),
    ("LYMPH_COUNT", "nan", "finite"),
    ("LABEL", "0.7", "label must be 0, 1 or -1"),
    ("LABEL", "inf", "label must be 0, 1 or -1"),
    ("DOB", "1850-01-01", "between 0 and 120"),
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


@pytest.mark.parametrize("value", ["../testset/P16", "a/b", "a\\b", ".", "..", "/etc"])
def test_an_id_that_is_not_a_plain_name_is_refused(small_cohort, value):
    """Today an ID like ../testset/P16 is followed out of its split folder and that folder's images used."""
    test_id = pd.read_csv(small_cohort / "testset" / "testset_data.csv", dtype=str)["ID"].iloc[0]
    edit_csv(small_cohort, 4, "ID", value.replace("P16", test_id))
    with pytest.raises(CohortError, match="not a plain name") as caught:
        load_cohort(small_cohort)
    assert (caught.value.line, caught.value.field) == (4, "ID")


@pytest.mark.parametrize("value", ["P1\0", "P1\n2", ""])
def test_parse_id_refuses_control_characters_and_empty_ids(value):
    with pytest.raises(CohortError, match="ID") as caught:
        parse_id(value, "x.csv", 3)
    assert caught.value.field == "ID"


def test_a_date_of_birth_after_the_sampling_date_is_refused(small_cohort):
    edit_csv(small_cohort, 4, "DOB", "2021-03-01")  # today: a negative age, accepted
    with pytest.raises(CohortError, match="after the sampling date 2020-01-01") as caught:
        load_cohort(small_cohort)
    assert (caught.value.line, caught.value.field) == (4, "DOB")


def test_implausible_values_load_with_a_warning_naming_the_field(small_cohort):
    edit_csv(small_cohort, 4, "LYMPH_COUNT", "650")
    edit_csv(small_cohort, 5, "DOB", "1905-06-01")  # 114.6 years at the reference date
    cohort = load_cohort(small_cohort)
    assert len(cohort.patients) == 18
    assert any("line 4, field LYMPH_COUNT" in w and "650" in w and "above 500" in w for w in cohort.warnings)
    assert any("line 5, field DOB" in w and "114.6" in w and "above 110" in w for w in cohort.warnings)


def test_age_is_taken_at_the_given_date():
    assert age_at(date(1956, 1, 1), date(2026, 1, 1)) == pytest.approx(70.0, abs=0.01)
    assert age_at(date(1956, 1, 1)) == pytest.approx(64.0, abs=0.01)  # the cohort's: at REFERENCE_DATE
    with pytest.raises(CohortError, match="after the sampling date") as caught:
        age_at(date(2026, 1, 2), date(2026, 1, 1))
    assert caught.value.field == "DOB"


@pytest.mark.parametrize("check, value, field", [
    (check_threshold, float("nan"), "threshold"), (check_threshold, 2, "threshold"),
    (check_threshold, -0.5, "threshold"), (check_threshold, 0, "threshold"),
    (check_threshold, float("inf"), "threshold"), (check_threshold, "high", "threshold"),
    (check_sensitivity, float("nan"), "sensitivity"), (check_sensitivity, 0, "sensitivity"),
    (check_sensitivity, 1.5, "sensitivity"),
])
def test_thresholds_and_sensitivities_outside_0_1_are_refused(check, value, field):
    with pytest.raises(ValueError, match=field):
        check(value)


def test_threshold_and_sensitivity_bounds():
    assert check_threshold(0.3) == 0.3 and check_threshold(1) == 1.0
    assert check_sensitivity(1.0) == 1.0 and check_sensitivity("0.95") == 0.95


@pytest.mark.parametrize("name, value", [("folds", 1), ("folds", 10**6), ("repeats", 0), ("repeats", -2),
                                         ("repeats", 10**6), ("seed", -1), ("seed", 2**40), ("folds", 2.5)])
def test_absurd_cross_validation_settings_are_refused(name, value):
    with pytest.raises(ValueError, match=name):
        check_setting(name, value)


def test_sampling_date_in_the_future_is_refused():
    today = date.today()
    assert check_sampling_date(today) == today
    with pytest.raises(CohortError, match="in the future") as caught:
        check_sampling_date(date(today.year + 1, 1, 1))
    assert caught.value.field == "sampling date"
