"""Images of vision-language tasks through the intake, on every store backend: uploaded with the data file, checked,
stored once by content, read back verified; missing, broken or unsafe images quarantine the file with the row."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from skillgraft.data import Intake, TaskSpec
from skillgraft.data.images import ImageProblem, check_ref, inspect
from skillgraft.data.intake import BatchCorrupted, IntakeError

sys.path.insert(0, str(Path(__file__).parents[1]))
from vlm_fixtures import COLOUR_SPEC, write_colour_task  # noqa: E402


@pytest.fixture
def intake(store) -> Intake:
    intake = Intake(store)
    intake.register_task(TaskSpec(**COLOUR_SPEC))
    return intake


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rewrite(path: Path, rows_: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows_))


def test_images_are_uploaded_checked_and_stored_once_by_content(intake, store, tmp_path):
    data = write_colour_task(tmp_path, 12)
    key = intake.submit("colour", data)
    assert key == "incoming/colour/colours.jsonl"
    assert len(intake.landed_images("colour")) == 12 and intake.incoming() == [key]  # images are not data files
    (result,) = intake.ingest()
    assert result.status == "accepted", result.message
    assert intake.landed_images("colour") == []  # taken with the batch
    stored = sorted(k for k in store.keys("tasks/colour/images/"))
    assert len(stored) == 12 and all(k.endswith(".png") for k in stored)
    examples = intake.load_split(result.batch, "train") + intake.load_split(result.batch, "eval")
    refs = {ex.image for ex in examples}
    assert {f"tasks/colour/{r}" for r in refs} == set(stored)  # splits hold content references
    originals = {r["image"]: (tmp_path / r["image"]).read_bytes() for r in rows(data)}
    assert {intake.load_image("colour", r) for r in refs} == set(originals.values())
    # the same question about different pictures is 12 examples, not 1 duplicate prompt
    assert len(examples) == 12 and len({ex.prompt for ex in examples}) == 1


def test_a_missing_or_broken_image_quarantines_the_file_naming_line_and_field(intake, store, tmp_path):
    data = write_colour_task(tmp_path, 10)
    (tmp_path / "imgs" / "000003.png").write_bytes(b"not a png at all")
    bad = rows(data)
    bad[6]["image"] = "imgs/missing.png"
    rewrite(data, bad)
    with pytest.raises(IntakeError, match=r"colours.jsonl:4: field 'image'.*not an image.*nothing was submitted"):
        intake.submit("colour", data)
    assert intake.incoming() == [] and intake.landed_images("colour") == []  # nothing landed, not even the good ones
    # dropped straight into the landing zone (no submit-side check): the intake finds the same problems
    for r in bad:
        if (tmp_path / r["image"]).exists():
            store.put_new(f"incoming/colour/{r['image']}", (tmp_path / r["image"]).read_bytes())
    store.put_new("incoming/colour/colours.jsonl", data.read_bytes())
    (result,) = intake.ingest()
    assert result.status == "quarantined"
    assert result.report.failed_rules() == ["image"]
    assert result.report.problems[0].startswith("colours.jsonl:4: ") and "not an image" in result.report.problems[0]
    assert any(
        p.startswith("colours.jsonl:7: ") and "'imgs/missing.png' not found" in p for p in result.report.problems
    )
    assert store.get(f"{result.location}colours.jsonl") == data.read_bytes()  # the data file kept byte for byte
    assert not list(store.keys("tasks/colour/images/"))  # nothing of a rejected batch is stored as accepted
    # its images wait for a corrected file, listed as orphans; landing that file takes them
    assert sorted(intake.orphaned_images()) == sorted(f"incoming/colour/{r['image']}" for r in bad
                                                      if (tmp_path / r["image"]).exists())  # fmt: skip
    fixed = [r for i, r in enumerate(bad) if i not in (3, 6)]
    rewrite(data, fixed)
    store.put_new("incoming/colour/colours.jsonl", data.read_bytes())
    assert intake.orphaned_images() == ["incoming/colour/imgs/000003.png"]  # the broken one only
    (again,) = intake.ingest()
    assert again.status == "accepted", again.message


def test_image_paths_that_leave_the_folder_are_refused(intake, store, tmp_path):
    data = write_colour_task(tmp_path / "data", 8)
    (tmp_path / "secret.png").write_bytes((tmp_path / "data/imgs/000000.png").read_bytes())
    bad = rows(data)
    bad[0]["image"] = "../secret.png"
    rewrite(data, bad)
    with pytest.raises(IntakeError, match=r"colours.jsonl:1: field 'image': image path '\.\./secret\.png' must not"):
        intake.submit("colour", data)
    assert not list(store.keys("incoming/"))
    for ref in ["/etc/passwd.png", "a\\b.png", "a//b.png", "x.txt", "imgs/ok file.png", "a/./b.png"]:
        with pytest.raises(ImageProblem):
            check_ref(ref)
    assert check_ref("imgs/sub-dir/0001.v2.png") == "imgs/sub-dir/0001.v2.png"


def test_the_same_picture_under_two_names_is_one_example(intake, tmp_path):
    data = write_colour_task(tmp_path, 9)
    twin = tmp_path / "imgs" / "copy.png"
    twin.write_bytes((tmp_path / "imgs" / "000000.png").read_bytes())
    more = rows(data) + [{"prompt": rows(data)[0]["prompt"], "image": "imgs/copy.png", "answer": "red"}]
    rewrite(data, more)
    intake.submit("colour", data)
    (result,) = intake.ingest()
    assert result.status == "quarantined" and "duplicates" in result.report.failed_rules()


def test_an_image_two_waiting_files_share_stays_for_the_second(intake, store, tmp_path):
    first = write_colour_task(tmp_path / "a", 9)
    second = tmp_path / "a" / "more.jsonl"
    shared = rows(first)[0]["image"]
    rewrite(
        second, [{"prompt": f"what colour is this picture ? {c}", "image": shared, "answer": "red"} for c in "abcdefgh"]
    )
    intake.submit("colour", first)
    intake.submit("colour", second)
    results = {r.file: r for r in intake.ingest()}
    assert results["colours.jsonl"].status == "accepted", results["colours.jsonl"].message
    assert results["more.jsonl"].status == "accepted", results["more.jsonl"].message
    assert intake.landed_images("colour") == []
    assert len(list(store.keys("tasks/colour/images/"))) == 9  # the shared picture is stored once


def test_validate_reads_images_beside_the_local_file_and_writes_nothing(intake, store, tmp_path):
    data = write_colour_task(tmp_path, 8)
    assert intake.check("colour", data).success
    (tmp_path / "imgs" / "000002.png").unlink()
    report = intake.check("colour", data)
    assert not report.success and report.failed_rules() == ["image"] and "colours.jsonl:3:" in report.problems[0]
    assert not list(store.keys("incoming/")) and not list(store.keys("tasks/colour/images/"))


def test_a_stored_image_that_changed_is_refused_on_read(intake, store, tmp_path):
    intake.submit("colour", write_colour_task(tmp_path, 8))
    (result,) = intake.ingest()
    ref = intake.load_split(result.batch, "train")[0].image
    store.delete(f"tasks/colour/{ref}")
    store.put_new(f"tasks/colour/{ref}", (tmp_path / "imgs" / "000001.png").read_bytes())
    with pytest.raises(BatchCorrupted, match="does not match the sha256 in its name"):
        intake.load_image("colour", ref)
    with pytest.raises(ImageProblem):
        intake.load_image("colour", "../../models/x/champion.png")  # only content references become keys


def test_inspect_refuses_oversized_and_truncated_images(tmp_path, monkeypatch):
    from PIL import Image

    from skillgraft.data import images

    Image.new("RGB", (64, 64), "red").save(tmp_path / "ok.png")
    body = (tmp_path / "ok.png").read_bytes()
    assert inspect(body) == ".png"
    with pytest.raises(ImageProblem, match="does not decode|not an image"):
        inspect(body[: len(body) // 2])
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(ImageProblem, match="64x64 pixels, over the 1,000-pixel limit"):
        inspect(body)


def test_cli_submit_and_validate_name_the_bad_image_without_a_traceback(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from skillgraft.cli import app

    data = write_colour_task(tmp_path, 9)
    (tmp_path / "imgs" / "000004.png").write_bytes(b"junk")
    spec = tmp_path / "colour.yaml"
    spec.write_text(yaml.safe_dump(COLOUR_SPEC))
    store = str(tmp_path / "store")
    submitted = CliRunner().invoke(app, ["submit", "colour", str(data), "--spec", str(spec), "--store", store])
    assert submitted.exit_code == 1 and isinstance(submitted.exception, SystemExit)
    text = " ".join(submitted.output.split())
    assert "colours.jsonl:5: field 'image': image 'imgs/000004.png': file is not an image" in text
    assert "nothing was submitted" in text and "Traceback" not in text
    checked = CliRunner().invoke(app, ["validate", "colour", str(data), "--store", store])
    checked_text = " ".join(checked.output.split())
    assert checked.exit_code == 1 and "REJECTED" in checked_text and "9 rows" in checked_text
    assert "colours.jsonl:5: image 'imgs/000004.png': file is not an image" in checked_text
