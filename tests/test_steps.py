"""Core steps that need no training: which accepted batches still wait to be trained on."""

from skillgraft import demo, steps
from skillgraft.config import SkillgraftConfig
from skillgraft.data import Intake
from skillgraft.refs import Manifest
from skillgraft.registry import Registry
from skillgraft.store import LocalStore


def test_a_batch_accepted_but_never_trained_is_picked_up_until_a_version_uses_it(tmp_path):
    store = LocalStore(tmp_path)
    cfg = SkillgraftConfig(store=str(tmp_path))
    intake = Intake(store)
    for spec in demo.SPECS.values():
        intake.register_task(spec)
    base = steps.ensure_model(store, cfg)
    first = intake.accept_examples("first", demo.generate("first", 40, seed=0), "first.jsonl")
    count = intake.accept_examples("count", demo.generate("count", 40, seed=0), "count.jsonl")
    assert sorted(b.task for b in steps.untrained_batches(store, "demo")) == ["count", "first"]
    assert steps.untrained_batches(store, "demo", "count") == [count]
    reg = Registry(store, "demo")
    manifest = Manifest(model="demo", version="pending", parent=None, base=base, recipe={"kind": "full"},
                        batches=[first], tasks=["first"])  # fmt: skip
    version = reg.create_version({steps.DELTA_FILE: b"not used here"}, manifest).version
    # trained but never gated (its run stopped before the gate): the batch still waits, or it would be stranded
    assert sorted(b.task for b in steps.untrained_batches(store, "demo")) == ["count", "first"]
    reg.attach(version, "decision.json", b'{"promote": false}')
    assert steps.untrained_batches(store, "demo") == [count]
    assert len(steps.untrained_batches(store, "other-model")) == 2  # batches are shared; use is per model
