"""`cairn eval answers`: the metrics by hand, the dataset pieces, and a whole run through the
answer service with the generator chosen by settings (the tiny DeepSeek stands in for
another model an operator would point Cairn at)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.chat.answers import Answer
from app.evaluation.answers import (
    Record,
    apply_overrides,
    cmrc_f1,
    contains_gold,
    corpus_subset,
    evaluate_answers,
    load_gold,
    markdown,
    own_words,
    parse_variant,
    same_questions,
    sample_queries,
    summarise,
)
from app.evaluation.beir import BeirDataset, DatasetError, load_beir
from app.kit.settings import Settings

EN_QA = Path(__file__).parent / "fixtures" / "en-qa"


def test_gold_span_matching() -> None:
    assert contains_gold("黄色的 [2]。", ["黄色"])
    # Citation markers, spaces, punctuation, width and case do not matter.
    assert contains_gold("根据文档：生命数耗完即算为踢爆[1]", ["踢爆"])
    assert contains_gold("It took FOUR score, and seven years [1].", ["four score and seven"])
    assert contains_gold("１８２厘米", ["182厘米"])
    assert not contains_gold("2米29厘米", ["182厘米"])
    # A marker is not an answer: "[1]" does not contain the gold "1".
    assert not contains_gold("See [1].", ["1"])
    assert not contains_gold("anything", ["", "  "])


def _record(**flags: object) -> Record:
    record = Record(
        variant="v",
        query_id="q",
        question="?",
        gold=["x"],
        gold_document=["d"],
        answer="a",
        generated=None,
        check=str(flags.pop("check", "supported")),
        grounded=bool(flags.pop("grounded", True)),
        note=None,
        cited_documents=["d"],
        quotes=[],
        seconds=float(str(flags.pop("seconds", 1.0))),
    )
    for name, value in flags.items():
        setattr(record, name, value)
    return record


def test_rates_are_shares_of_all_answers() -> None:
    records = [
        # Its gold span is in its own words, not only in the quote it ends with.
        _record(gold_span=True, gold_span_own=True, gold_cited=True, seconds=1.0),
        _record(gold_span=False, gold_cited=True, unsupported=True, seconds=3.0),
        _record(gold_span=False, grounded=False, check="refused", refused=True, seconds=2.0),
        _record(gold_span=True, grounded=False, check="unsupported", seconds=10.0),
    ]
    metrics = summarise("v", records)
    assert metrics.answers == 4
    assert metrics.gold_span == 0.5
    assert metrics.gold_cited == 0.5
    assert metrics.unsupported == 0.25
    # Shown as grounded without a gold span: only the second.
    assert metrics.grounded_wrong == 0.25
    assert metrics.refusal == 0.25
    assert metrics.median_seconds == 2.5
    assert metrics.outcomes == {"refused": 1, "supported": 2, "unsupported": 1}
    table = markdown([metrics])
    assert metrics.gold_span_own == 0.25
    assert metrics.quoted == 0.0
    assert metrics.p90_seconds == 10.0
    assert metrics.peak_mib > 0
    assert "| v | 4 | 0.500 | 0.250 | 0.000 | 0.000 | 0.250 | 0.500 | 0.250 | 0.250 | 2.50 |" in (
        table
    )


def test_a_variant_stopped_early_is_compared_on_its_own_questions() -> None:
    right, wrong = _record(gold_span=True, seconds=1.0), _record(gold_span=False, seconds=9.0)
    answered = {
        "small": [right, wrong, wrong, right],
        "large": [right, right],  # stopped after two questions
        "cut at once": [],
    }
    rows = same_questions(answered)
    # "small" on the two questions "large" answered; nothing against an empty variant.
    assert [(m.variant, m.answers) for m in rows] == [("small (first 2)", 2)]
    (row,) = rows
    assert (row.gold_span, row.median_seconds) == (0.5, 5.0)
    # A re-scored row's peak memory is not its own: shown as a dash.
    assert row.peak_mib == 0.0
    assert "| 9.00 | – |" in markdown(rows)
    assert same_questions({"a": [right], "b": [wrong]}) == []


def test_cmrc_f1_and_own_words() -> None:
    # CMRC 2018's F1: characters of Chinese, words of English, the longest common run.
    assert cmrc_f1("31459人", ["居民总数为31459人。"]) == pytest.approx(
        2 * 1 * (2 / 7) / (1 + 2 / 7)
    )
    assert cmrc_f1("根据2002年人口普查的数据，居民总数为31459人。", ["居民总数为31459人"]) > 0.5
    assert cmrc_f1("The answer is Paris", ["Paris"]) == pytest.approx(2 * 0.25 / 1.25)
    assert cmrc_f1("", ["x"]) == 0.0
    assert cmrc_f1("完全不同", ["黄色"]) == 0.0
    supported = Answer(
        "二十五天[1]。\n\n原文：“每位员工享有二十五天。” [1]",
        [],
        "stop",
        grounded=True,
        check="supported",
        quote="\n\n原文：“每位员工享有二十五天。” [1]",
    )
    assert own_words(supported).replace(" ", "") == "二十五天。"
    # A quote given instead of the model's answer is not its own words.
    quoted = Answer("根据文档：每位员工享有二十五天。[1]", [], "stop", False, check="quoted")
    assert own_words(quoted) == ""
    flagged = Answer("三十天[1]\n\nNote", [], "stop", False, check="unsupported", note="Note")
    assert own_words(flagged) == "三十天"
    records = [_record(check="quoted", own_f1=0.0), _record(own_f1=0.5)]
    metrics = summarise("v", records)
    assert (metrics.quoted, metrics.own_f1) == (0.5, 0.25)


def test_variants_and_overrides(settings: Settings) -> None:
    name, overrides = parse_variant("short:chat.passage_sentences=3, chat.trim_repetition=true")
    assert (name, overrides) == (
        "short",
        {"chat.passage_sentences": "3", "chat.trim_repetition": "true"},
    )
    changed = apply_overrides(settings, overrides | {"generator.max_new_tokens": "16"})
    assert changed.chat.passage_sentences == 3
    assert changed.chat.trim_repetition is True
    assert changed.generator.max_new_tokens == 16
    assert settings.chat.passage_sentences == 0
    with pytest.raises(ValueError, match="unknown setting"):
        apply_overrides(settings, {"chat.no_such_thing": "1"})
    with pytest.raises(ValueError, match="prompt_style"):
        apply_overrides(settings, {"chat.prompt_style": "poetry"})
    with pytest.raises(ValueError, match="key=value"):
        parse_variant("bad:chat.top_k")


def test_fixture_sample_and_subset(tmp_path: Path) -> None:
    dataset = load_beir(EN_QA)
    gold = load_gold(EN_QA)
    assert gold["q4"] == ["Ishmael"]
    picked = sample_queries(dataset, gold, size=3, seed=7)
    assert picked == sample_queries(dataset, gold, size=3, seed=7)
    assert len(picked) == 3
    subset = corpus_subset(dataset, picked, distractors=1, seed=7)
    judged = {doc for q in picked for doc in dataset.qrels[q]}
    assert judged <= set(subset.corpus)
    assert len(subset.corpus) == len(judged) + 1
    # Every gold span is copied from its passage.
    for query_id, spans in gold.items():
        [doc] = dataset.qrels[query_id]
        assert any(contains_gold(dataset.corpus[doc][1], [s]) for s in spans), query_id
    (tmp_path / "answers.jsonl").write_text('{"_id": "q1", "answers": "not a list"}\n')
    with pytest.raises(DatasetError, match="no list"):
        load_gold(tmp_path)


def _two_questions() -> tuple[BeirDataset, dict[str, list[str]], list[str]]:
    """Two en-qa questions with their passages and two distractors, and their gold spans."""
    dataset = load_beir(EN_QA)
    gold = load_gold(EN_QA)
    picked = sample_queries(dataset, gold, size=2, seed=1)
    return corpus_subset(dataset, picked, distractors=2, seed=1), gold, picked


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_run_through_the_answer_service_with_another_model(
    settings: Settings, tmp_path: Path, tiny_deepseek_v3: Path
) -> None:
    subset, gold, picked = _two_questions()
    other_model = {
        "generator.model_path": str(tiny_deepseek_v3),
        "generator.max_new_tokens": "8",
        "chat.unsupported_answer": "flag",
    }
    report = await evaluate_answers(
        settings,
        subset,
        gold,
        tenant="evalen",
        query_ids=picked,
        variants=[
            ("tiny", other_model),
            ("tiny+quote", other_model | {"chat.unsupported_answer": "quote"}),
        ],
        log_dir=tmp_path / "logs",
        reuse=True,
    )
    assert report.documents == 4
    first, second = report.metrics
    assert (first.answers, second.answers) == (2, 2)
    # The second variant sends the same prompts: the tiny model's text is reused, not redone.
    assert second.reused == 2
    assert report.settings["tiny"]["generator.model_path"] == str(tiny_deepseek_v3)
    assert report.settings["tiny+quote"]["chat.unsupported_answer"] == "quote"
    lines = [json.loads(line) for line in report.logs[0].read_text().splitlines()]
    assert [line["query_id"] for line in lines] == picked
    for line in lines:
        # The tiny model writes noise: never shown as grounded unless the check passed it.
        assert line["grounded"] == (line["check"] == "supported")
        assert set(line) >= {"answer", "gold_span", "gold_cited", "unsupported", "seconds"}
        # The prompt passages are logged, and the quote a grounded answer ends with.
        assert line["passages"]
        assert {"ref", "document", "text"} <= set(line["passages"][0])
        assert line["answer"].endswith(line["quote"])
        assert line["gold_span_own"] <= line["gold_span"]
        # Why the check decided as it did, for reading the log: "ok" only for a pass.
        assert (line["reason"] == "ok") == line["grounded"], line
    # Quoting the documents instead of the noise: verbatim quotes, shown as evidence rather
    # than as a grounded answer (chat.quote_grounded is off).
    quoted = [json.loads(line) for line in report.logs[1].read_text().splitlines()]
    for line in quoted:
        if line["check"] == "quoted":
            assert line["answer"].startswith("According to the documents: ")
            assert line["grounded"] is False


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_timed_out_answer_counts_as_failed_and_the_run_goes_on(
    settings: Settings, tmp_path: Path, tiny_deepseek_v3: Path
) -> None:
    subset, gold, picked = _two_questions()
    report = await evaluate_answers(
        settings,
        subset,
        gold,
        tenant="evaltimeout",
        query_ids=picked,
        variants=[
            (
                "too slow",
                {
                    "generator.model_path": str(tiny_deepseek_v3),
                    # Past the deadline before the first token: every answer is a 504.
                    "generator.timeout_seconds": "0.000001",
                },
            )
        ],
        log_dir=tmp_path / "logs",
    )
    (metrics,) = report.metrics
    assert metrics.answers == 2
    assert metrics.outcomes == {"timeout": 2}
    assert (metrics.gold_span, metrics.own_f1, metrics.grounded_wrong) == (0.0, 0.0, 0.0)
    lines = [json.loads(line) for line in report.logs[0].read_text().splitlines()]
    assert [(line["check"], line["answer"], line["grounded"]) for line in lines] == [
        ("timeout", "", False),
        ("timeout", "", False),
    ]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_time_limit_per_variant_stops_its_questions(
    settings: Settings, tmp_path: Path, tiny_deepseek_v3: Path
) -> None:
    subset, gold, picked = _two_questions()
    model = {"generator.model_path": str(tiny_deepseek_v3), "generator.max_new_tokens": "4"}
    report = await evaluate_answers(
        settings,
        subset,
        gold,
        tenant="evallimit",
        query_ids=picked,
        variants=[("first", model), ("second", model)],
        log_dir=tmp_path / "logs",
        # Spent before the second question of each: one answer each, never none.
        variant_seconds=1e-9,
    )
    assert report.stopped == {"first": 1, "second": 1}
    assert [(m.variant, m.answers) for m in report.metrics] == [("first", 1), ("second", 1)]
    for log in report.logs:
        [line] = log.read_text().splitlines()
        assert json.loads(line)["query_id"] == picked[0]
