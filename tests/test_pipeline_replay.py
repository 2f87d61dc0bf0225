"""Every shipped pipeline, end to end, against `ReplayTeacher`: a scripted chat function that replays
fixture replies (a test instrument, not a teacher). Checks rows, drop counts, errors, usage, seeds.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import pytest

from sdg.pipeline.loader import load_pipeline
from sdg.pipeline.types import RequestError, UnitContext, UnitResult
from sdg.teacher.client import Completion, RequestFailure

FIXTURES = Path(__file__).parent / "fixtures" / "model_replies"

# Markers that tell the prompts apart (each appears in exactly one prompt file of a pipeline).
GENERATE = "Use exactly this format"
Q_LIST = "without answers"
CONTEXTS = "Start each text with"
FAITHFUL = "supported by the document"
RELEVANT = "respond directly"
SELF_CONTAINED = "without seeing any document"
JUDGE_Q = "How good is this question"
JUDGE_A = "How good is this answer"
ANSWER = "Write only the answer"

Scripted = Union[str, Completion, RequestFailure, Exception]


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def done(text: str, finish: str = "stop") -> Completion:
    return Completion(text=text, finish_reason=finish, prompt_tokens=100, completion_tokens=max(1, len(text) // 4),
                      endpoint="replay", attempts=1, latency_s=0.0, texts=(text,))


def failed(kind: str = "timeout", message: str = "no answer in 600 s") -> RequestFailure:
    return RequestFailure(kind=kind, message=message, status=None, endpoint="replay", attempts=5, retryable=True)


@dataclass
class Call:
    messages: list[dict]
    max_tokens: int
    temperature: float
    seed: int | None
    stop: list[str] | None

    @property
    def user(self) -> str:
        return self.messages[-1]["content"]


@dataclass
class ReplayTeacher:
    """Replays scripted replies: each route is (marker, replies); a call goes to the first route whose marker
    is in its prompt and takes that route's next reply (the last one repeats). A plain string is a
    completed reply; an Exception is raised (to test what a misbehaving chat function does)."""

    routes: Sequence[tuple[str, Sequence[Scripted]]]
    calls: list[Call] = field(default_factory=list)
    _used: Counter = field(default_factory=Counter)

    async def chat(self, messages: list[dict], *, max_tokens: int, temperature: float = 0.7, seed: int | None = None,
                   stop: list[str] | None = None, **extra: Any) -> Completion | RequestFailure:
        self.calls.append(Call(messages, max_tokens, temperature, seed, stop))
        prompt = "\n".join(m["content"] for m in messages)
        for marker, replies in self.routes:
            if marker in prompt:
                i = min(self._used[marker], len(replies) - 1)
                self._used[marker] += 1
                reply = replies[i]
                await asyncio.sleep(0)  # let other calls interleave, as a server would
                if isinstance(reply, Exception):
                    raise reply
                return done(reply) if isinstance(reply, str) else reply
        raise AssertionError(f"no scripted reply for prompt: {prompt[:300]!r}")

    def to(self, marker: str) -> list[Call]:
        return [c for c in self.calls if marker in "\n".join(m["content"] for m in c.messages)]


# ---- representative input rows, as the engine's planner makes them ------------------------------------------

def skill_row(target: int = 3, grounded: bool = False) -> dict:
    row = {
        "leaf_node_path": "compositional_skills->writing->freeform->haiku",
        "leaf_node_type": "grounded_skill" if grounded else "freeform_skill",
        "target_samples": target,
        "task_description": "Write a haiku about the topic given {in braces} or not",
        "seed_question": "Write a haiku about the sea.",
        "seed_response": "Waves fold into foam\nSalt wind carries gull voices\nThe tide keeps its time",
        "icl_examples": [
            {"question": "Write a haiku about a mountain.", "answer": "Stone shoulders in cloud\n..."},
            {"question": "Write a haiku about JSON {\"a\": 1}.", "answer": "Braces hold the keys\n..."},
        ],
    }
    if grounded:
        row["leaf_node_path"] = "compositional_skills->extraction->grounded->meeting_action_items"
        row["task_description"] = "List the action items in meeting notes"
        row["seed_context"] = "Notes, May 2. Ana will book the room. Raj sends the slides by Tuesday. {TBD}"
        row["seed_question"] = "What are the action items?"
        row["seed_response"] = "- Ana: book the room\n- Raj: send the slides by Tuesday"
        for ex in row["icl_examples"]:
            ex["context"] = "Call notes. Kim will email the client."
    return row


def knowledge_row(target: int = 3) -> dict:
    return {
        "leaf_node_path": "knowledge->science->astronomy->solar_eclipses",
        "leaf_node_type": "knowledge",
        "target_samples": target,
        "document": "A solar eclipse happens when the Moon passes between the Sun and Earth. {not a placeholder}",
        "icl_document": "Totality lasts at most about seven and a half minutes.",
        "document_outline": "Solar eclipses: causes, kinds and safety",
        "domain": "astronomy",
        "icl_query_1": "How long can totality last?", "icl_response_1": "About seven and a half minutes at most.",
        "icl_query_2": "What is totality?", "icl_response_2": "The part of an eclipse when the Sun is fully covered.",
        "icl_query_3": "Is totality long?", "icl_response_3": "No, only minutes.",
    }


def run(pipeline, row: dict, teacher: ReplayTeacher, seed: int = 1000) -> UnitResult:
    ctx = UnitContext(chat=teacher.chat, seed=seed, leaf_id=row["leaf_node_path"], unit_id="u-1")
    return asyncio.run(pipeline.run(row, ctx))


def assert_consistent(result: UnitResult, row: dict, pipeline=None) -> None:
    assert len(result.rows) <= row["target_samples"]
    for out in result.rows:
        if pipeline is not None:
            assert set(out) == pipeline.output_columns
        assert {k: out[k] for k in row} == row, "input columns pass through unchanged"
        assert isinstance(out["question"], str) and out["question"]
        assert isinstance(out["response"], str) and out["response"]
        assert not any(k.startswith("_") for k in out), "scratch columns never reach the output"
    assert all(n > 0 for n in result.dropped.values())
    assert all(":" in k for k in result.dropped)


# ---- simple ---------------------------------------------------------------------------------------------------

def test_simple_freeform_one_request_gives_the_target() -> None:
    teacher = ReplayTeacher([(GENERATE, [fixture("qa_colon_labels.txt")])])
    row = skill_row(3)
    result = run(load_pipeline("simple", "freeform_skill"), row, teacher)
    assert_consistent(result, row)
    assert [r["question"] for r in result.rows][0] == "Write a haiku about the first snow of winter."
    assert result.generated == 3 and len(result.rows) == 3 and not result.dropped and not result.errors
    assert result.requests == 1 and result.prompt_tokens == 100 and result.completion_tokens > 0
    call = teacher.calls[0]
    assert call.messages[0]["role"] == "system" and call.messages[1]["role"] == "user"
    assert "Write 3 new examples" in call.user and "Question: Write a haiku about the sea." in call.user
    assert "{in braces}" in call.user, "braces in user text survive rendering"
    assert call.seed == 1000 and call.max_tokens == 1024 and call.temperature == 0.7


def test_simple_splits_a_large_target_over_calls_with_distinct_seeds() -> None:
    teacher = ReplayTeacher([(GENERATE, [fixture("qa_colon_labels.txt"), fixture("qa_q_a_short.txt"),
                                         fixture("qa_dash_separators.txt")])])
    row = skill_row(12)
    result = run(load_pipeline("simple", "freeform_skill"), row, teacher, seed=7)
    assert result.requests == 3
    assert ["Write 5 new" in c.user for c in teacher.calls] == [True, True, False]
    assert "Write 2 new" in teacher.calls[2].user
    assert [c.seed for c in teacher.calls] == [7, 8, 9]
    assert result.generated == 9 and len(result.rows) == 9
    assert_consistent(result, row)


def test_simple_counts_duplicates_and_copies_before_it_keeps_the_target() -> None:
    loop = fixture("qa_repeated_loop.txt")
    copy = "Question: Write a haiku about the sea.\nAnswer: Waves again\n\nQuestion: Write a haiku about a mountain!\nAnswer: x y"
    teacher = ReplayTeacher([(GENERATE, [loop + "\n\n" + copy])])
    row = skill_row(5)
    result = run(load_pipeline("simple", "freeform_skill"), row, teacher)
    assert result.generated == 6
    assert len(result.rows) == 1
    # 6 parsed, all of them through the dedup: 3 repeat the first and two copy the examples
    assert result.dropped == Counter({"dedup:duplicate": 3, "dedup:copies_example": 2})
    teacher = ReplayTeacher([(GENERATE, [copy])])
    result = run(load_pipeline("simple", "freeform_skill"), skill_row(5), teacher)
    assert result.rows == [] and result.dropped == Counter({"dedup:copies_example": 2})


def test_copies_written_first_do_not_take_the_places_of_valid_samples() -> None:
    """A small model often hands the examples back first and writes new samples after them: every parsed item
    goes through the dedup before the unit keeps its target (a cap at the generation block kept the copies'
    places and threw valid samples away while the leaf still needed them)."""
    copy = "Question: Write a haiku about the sea.\nAnswer: Waves again"
    fresh = "\n\n".join(f"Question: Write a haiku about tree number {k}.\nAnswer: Leaves {k} fall" for k in range(6))
    teacher = ReplayTeacher([(GENERATE, [copy + "\n\n" + fresh])])
    result = run(load_pipeline("simple", "freeform_skill"), skill_row(5), teacher)
    assert result.generated == 7
    assert [r["question"] for r in result.rows] == [f"Write a haiku about tree number {k}." for k in range(5)]
    # the copy is dropped, 5 valid ones kept, and only the sixth valid one is past the unit's target
    assert result.dropped == Counter({"dedup:copies_example": 1, "dedup:over_target": 1})


@pytest.mark.parametrize("reply,reason", [
    ("", "generate:empty_reply"),
    ("   \n\n", "generate:empty_reply"),
    (fixture("qa_prose_no_format.txt"), "generate:unparseable"),
    (done("Here are some questions about haikus and", "length"), "generate:truncated"),
    (failed("timeout"), "generate:request_failed:timeout"),
    (failed("context_length", "prompt too long"), "generate:request_failed:context_length"),
    (RuntimeError("chat exploded"), "generate:request_failed:exception"),
])
def test_a_reply_that_yields_nothing_is_counted_with_its_reason(reply: Scripted, reason: str) -> None:
    teacher = ReplayTeacher([(GENERATE, [reply])])
    result = run(load_pipeline("simple", "freeform_skill"), skill_row(2), teacher)
    assert result.rows == [] and result.generated == 0 and result.requests == 1
    assert result.dropped == Counter({reason: 1})
    if "request_failed" in reason:
        kind = reason.rsplit(":", 1)[1]
        assert len(result.errors) == 1 and result.errors[0].block == "generate" and result.errors[0].kind == kind
        assert result.errors[0].message
    else:
        assert result.errors == []


def test_a_reply_cut_by_max_tokens_loses_only_its_unfinished_item() -> None:
    teacher = ReplayTeacher([(GENERATE, [done(fixture("qa_truncated.txt"), "length")])])
    result = run(load_pipeline("simple", "freeform_skill"), skill_row(5), teacher)
    assert result.generated == 3 and len(result.rows) == 2
    assert result.dropped == Counter({"generate:truncated_item": 1})


def test_one_failed_call_of_several_keeps_the_others() -> None:
    teacher = ReplayTeacher([(GENERATE, [fixture("qa_colon_labels.txt"), failed("http", "HTTP 503"), ""])])
    row = skill_row(15)
    result = run(load_pipeline("simple", "freeform_skill"), row, teacher)
    assert len(result.rows) == 3 and result.requests == 3
    assert result.dropped == Counter({"generate:request_failed:http": 1, "generate:empty_reply": 1})
    # a 503 is transient: recorded as retryable, so the unit is journaled failed and redone on resume
    assert result.errors == [RequestError("generate", "http", "HTTP 503", retryable=True)]
    assert result.transient_failure


def test_simple_grounded_sets_context_to_the_seed_context() -> None:
    teacher = ReplayTeacher([(GENERATE, [fixture("qa_missing_end_tags.txt")])])
    row = skill_row(2, grounded=True)
    result = run(load_pipeline("simple", "grounded_skill"), row, teacher)
    assert_consistent(result, row)
    assert len(result.rows) == 2 and all(r["context"] == row["seed_context"] for r in result.rows)
    assert "{TBD}" in teacher.calls[0].user and "Text:\nNotes, May 2." in teacher.calls[0].user


def test_simple_knowledge_adds_raw_document() -> None:
    teacher = ReplayTeacher([(GENERATE, [fixture("qa_bracket_tags.txt")])])
    row = knowledge_row(2)
    pipeline = load_pipeline("simple", "knowledge")
    result = run(pipeline, row, teacher)
    assert_consistent(result, row, pipeline)
    assert len(result.rows) == 2 and result.dropped == Counter({"dedup:over_target": 1})
    assert all(r["raw_document"] == row["document"] for r in result.rows)
    assert "dataset_type" not in result.rows[0]
    user = teacher.calls[0].user
    assert "{not a placeholder}" in user and "Question: How long can totality last?" in user


def test_replies_shaped_like_what_smollm2_wrote_here() -> None:
    """Shapes seen from the embedded teacher: copies of the seed questions, a looping answer cut by
    max_tokens, judges that never give a verdict. All counted, nothing kept, nothing raised."""
    teacher = ReplayTeacher([(GENERATE, [fixture("qa_echoed_instructions.txt")])])
    result = run(load_pipeline("simple", "knowledge"), knowledge_row(2), teacher)
    assert result.rows == [] and result.generated == 2 and result.dropped == Counter({"dedup:copies_example": 2})

    teacher = ReplayTeacher([(GENERATE, [done(fixture("qa_rambling_intro_loop.txt"), "length")])])
    result = run(load_pipeline("simple", "freeform_skill"), skill_row(2), teacher)
    assert result.rows == [] and result.dropped == Counter({"generate:truncated_item": 1})

    teacher = ReplayTeacher([(GENERATE, [fixture("qa_bracket_tags.txt")]),
                             (FAITHFUL, [done(fixture("judge_prose_no_verdict.txt"), "length")])])
    result = run(load_pipeline("full", "knowledge"), knowledge_row(3), teacher)
    assert result.rows == [] and result.dropped == Counter({"judge_faithfulness:truncated": 3})


# ---- full -----------------------------------------------------------------------------------------------------

def test_full_knowledge_keeps_pairs_that_pass_all_three_judges() -> None:
    teacher = ReplayTeacher([
        (GENERATE, [fixture("qa_bracket_tags.txt")]),
        (FAITHFUL, ["Score: 1", "Score: 0", "I cannot tell."]),
        (RELEVANT, ["Yes"]),
        (SELF_CONTAINED, [fixture("judge_yes_explained.txt")]),
    ])
    row = knowledge_row(3)
    pipeline = load_pipeline("full", "knowledge")
    result = run(pipeline, row, teacher)
    assert_consistent(result, row, pipeline)
    assert result.generated == 3 and len(result.rows) == 1
    out = result.rows[0]
    assert out["question"] == "What is the boiling point of water at sea level?"
    assert (out["judge_faithfulness"], out["judge_relevancy"], out["judge_question"]) == (1, 1, 1)
    assert out["raw_document"] == row["document"] and out["dataset_type"] == "base_document"
    assert result.dropped == Counter({"faithful:below_threshold": 1, "judge_faithfulness:unparseable": 1})
    assert result.requests == 1 + 3 + 1 + 1
    judge = teacher.to(FAITHFUL)[0]
    assert judge.temperature == 0.0 and judge.max_tokens == 64
    assert "Answer: Water boils at 100 degrees" in judge.user


def test_full_freeform_questions_judge_answer_judge() -> None:
    teacher = ReplayTeacher([
        (Q_LIST, [fixture("questions_numbered.txt")]),
        (JUDGE_Q, ["Score: 3", "Score: 1", "Score: 2", fixture("judge_no_score.txt"), fixture("judge_rambling.txt")]),
        (ANSWER, [fixture("answer_plain.txt"), "", failed("http", "HTTP 500")]),
        (JUDGE_A, ["Score: 3"]),
    ])
    row = skill_row(5)
    pipeline = load_pipeline("full", "freeform_skill")
    result = run(pipeline, row, teacher)
    assert_consistent(result, row, pipeline)
    assert result.generated == 5
    assert [r["question"] for r in result.rows] == ["Write a haiku about a thunderstorm at night."]
    assert result.rows[0]["response"].startswith("To make a good cup of tea")
    assert (result.rows[0]["judge_question"], result.rows[0]["judge_answer"]) == (3, 3)
    assert result.dropped == Counter({"keep_question:below_threshold": 1, "judge_question:unparseable": 1,
                                      "answer:empty_reply": 1, "answer:request_failed:http": 1})
    assert result.requests == 1 + 5 + 3 + 1
    assert [e.kind for e in result.errors] == ["http"]
    answer_call = teacher.to(ANSWER)[0]
    assert answer_call.stop == ["\nQuestion:", "[End]"]
    assert "Question: Write a haiku about a thunderstorm at night." in answer_call.user


def test_a_score_outside_the_judge_scale_drops_the_row() -> None:
    teacher = ReplayTeacher([(Q_LIST, ["Question: Write a haiku about frost."]), (JUDGE_Q, ["Score: 7"])])
    result = run(load_pipeline("full", "freeform_skill"), skill_row(1), teacher)
    assert result.rows == [] and result.dropped == Counter({"judge_question:out_of_range": 1})


def test_full_grounded_contexts_then_one_question_each() -> None:
    teacher = ReplayTeacher([
        (CONTEXTS, [fixture("contexts_labelled.txt")]),
        (Q_LIST, ["Question: When does the launch happen?", "1. Who drafts the supplier contract?"]),
        (JUDGE_Q, ["Score: 3", "[Score] 2"]),
        (ANSWER, ["Answer: On May 14.", "Ruth drafts it by March 7."]),
        (JUDGE_A, ["Score: 3", "Score: 1"]),
    ])
    row = skill_row(2, grounded=True)
    pipeline = load_pipeline("full", "grounded_skill")
    result = run(pipeline, row, teacher)
    assert_consistent(result, row, pipeline)
    assert result.generated == 2 and len(result.rows) == 1
    out = result.rows[0]
    assert out["context"].startswith("From: Dana Lee") and out["question"] == "When does the launch happen?"
    assert out["response"] == "On May 14."
    assert result.dropped == Counter({"keep_answer:below_threshold": 1})
    assert result.requests == 1 + 2 + 2 + 2 + 2
    assert "Context:\nNotes, May 2." in teacher.to(CONTEXTS)[0].user
    assert "Context:\nFrom: Dana Lee" in teacher.to(Q_LIST)[0].user
    seeds = [c.seed for c in teacher.calls]
    assert len(set(seeds)) == len(seeds), "every call of a unit gets its own seed"


def test_full_grounded_with_no_contexts_stops_early() -> None:
    teacher = ReplayTeacher([(CONTEXTS, ["Sure!"])])
    result = run(load_pipeline("full", "grounded_skill"), skill_row(3, grounded=True), teacher)
    assert result.rows == [] and result.requests == 2 and result.generated == 0
    assert result.dropped == Counter({"contexts:unparseable": 2})


# ---- contract -------------------------------------------------------------------------------------------------

def test_same_replies_same_seed_same_result() -> None:
    def once() -> tuple:
        teacher = ReplayTeacher([(GENERATE, [fixture("qa_colon_labels.txt"), fixture("qa_q_a_short.txt")])])
        result = run(load_pipeline("simple", "freeform_skill"), skill_row(8), teacher, seed=42)
        return result.rows, [c.seed for c in teacher.calls], [c.user for c in teacher.calls]

    assert once() == once()


def test_bad_target_is_an_error_record_not_an_exception() -> None:
    teacher = ReplayTeacher([(GENERATE, ["x"])])
    for bad in (0, -1, "3", None, True):
        row = {**skill_row(), "target_samples": bad}
        result = run(load_pipeline("simple", "freeform_skill"), row, teacher)
        assert result.rows == [] and result.errors[0].kind == "bad_row" and result.requests == 0


def test_pipeline_is_a_run_unit_callable() -> None:
    teacher = ReplayTeacher([(GENERATE, [fixture("qa_colon_labels.txt")])])
    pipeline = load_pipeline("simple", "freeform_skill")
    ctx = UnitContext(chat=teacher.chat, seed=1, leaf_id="l", unit_id="u")
    result = asyncio.run(pipeline(skill_row(1), ctx))
    assert len(result.rows) == 1


def test_cancellation_propagates() -> None:
    async def hang(messages, **kw):
        await asyncio.sleep(3600)

    async def main() -> None:
        ctx = UnitContext(chat=hang, seed=1, leaf_id="l", unit_id="u")
        task = asyncio.create_task(load_pipeline("simple", "freeform_skill").run(skill_row(2), ctx))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
