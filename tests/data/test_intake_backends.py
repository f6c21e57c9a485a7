"""The intake works the same on every store backend: a local directory and a real S3 API (moto server on loopback)."""

from pathlib import Path

from skillgraft.data import Intake, TaskSpec

CORPUS = Path(__file__).parent / "corpus"


def test_submit_ingest_accept_quarantine_and_duplicate_on_every_backend(store, tmp_path):
    intake = Intake(store)
    intake.register_task(TaskSpec(name="qa", min_rows=4))
    good = tmp_path / "good.jsonl"
    good.write_text("".join(f'{{"prompt": "question {i}", "answer": "answer {i}"}}\n' for i in range(20)))
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"prompt": "q", "answer": "a"}\n{not json\n')
    intake.submit("qa", good)
    intake.submit("qa", bad)
    results = {r.file: r for r in intake.ingest()}
    assert results["good.jsonl"].status == "accepted" and results["bad.jsonl"].status == "quarantined"
    assert intake.incoming() == []
    batch = results["good.jsonl"].batch
    train, held = intake.load_split(batch, "train"), intake.load_split(batch, "eval")
    assert len(train) + len(held) == 20 and held and {e.prompt for e in train}.isdisjoint({e.prompt for e in held})
    where = results["bad.jsonl"].location
    assert store.get(f"{where.rstrip('/')}/bad.jsonl") == bad.read_bytes()  # kept byte for byte
    intake.submit("qa", good)
    (again,) = intake.ingest()
    assert again.status == "duplicate" and intake.batches("qa") == [batch]
