"""The regression suite's probe: what it reads and what it leaves out."""

import pytest

from skillgraft import demo


@pytest.fixture(scope="module")
def tokenizer():
    return demo.build_tokenizer()


def test_bias_probe_leaves_out_old_tasks_whose_right_answers_are_numbers(tokenizer):
    from skillgraft.evaluate import EvalTask, numeric_answers, run_suite

    model = demo.build_model(tokenizer)
    letters, counts = demo.generate("first", 6, seed=0), demo.generate("count", 6, seed=0)
    assert numeric_answers(counts) and not numeric_answers(letters)
    tasks = [
        EvalTask(name="first", metric="exact_match", max_new_tokens=2, examples=letters),
        EvalTask(name="count", metric="exact_match", max_new_tokens=2, examples=counts),
        EvalTask(
            name="sum", metric="exact_match", max_new_tokens=2, examples=demo.generate("sum", 4, seed=0), new=True
        ),
    ]
    report = run_suite(model, model, tokenizer, tasks, champion_label="v1", candidate_label="v2", probe_prompts=10)
    assert report.probe.prompts == len(letters)  # only the letter task's prompts were probed
    assert {r.task for r in report.rows} == {"first", "count", "sum"}


def test_first_word_metric_scores_the_first_word_and_keeps_per_example_matches():
    from skillgraft.evaluate import load_metric

    got = load_metric("first_word").compute(
        predictions=["cold.", " Paris, the capital", "", "«big» one", "5 apples", "Cold"],
        references=["cold", "Paris", "x", "big", "5", "cold"],
    )
    assert got["matches"] == [1, 1, 0, 1, 1, 0] and got["first_word"] == pytest.approx(4 / 6)
    exact = load_metric("exact_match").compute(predictions=["a  b", "cold."], references=["a b", "cold"])
    assert exact["matches"] == [1, 0]
