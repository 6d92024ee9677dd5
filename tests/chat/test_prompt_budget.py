"""Issue 21, item 6: the prompt is cut to the generator's token budget. Earlier turns give way
first (the oldest first), then the client's instructions, then passages from the lowest-ranked;
the question never does, and the best passage is cut short rather than left out."""

from __future__ import annotations

import pytest

from app.chat.prompt import (
    MIN_PASSAGE_TOKENS,
    PREAMBLE,
    Passage,
    QuestionTooLong,
    Turn,
    build_messages,
    fit_prompt,
    render_passages,
)
from app.generation.base import ChatMessage
from app.generation.tokens import (
    TOKENS_PER_MESSAGE,
    TOKENS_PER_PROMPT,
    TokenBudget,
    estimate_tokens,
)

QUESTION = "How many days of paid vacation does every employee receive per year?"
BEST = Passage(1, 10, 100, "vacation.txt", "Every employee receives twenty five days per year.")
SECOND = Passage(2, 11, 110, "parking.txt", "Parking permits are issued by the facilities desk.")
THIRD = Passage(3, 12, 120, "canteen.txt", "The canteen opens at eight in the morning. " * 20)


def words(text: str) -> int:
    """A stand-in tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def budget(tokens: int) -> TokenBudget:
    return TokenBudget(tokens, words, "tokenizer")


def total(messages: list[ChatMessage], count: TokenBudget) -> int:
    """The prompt's tokens as the budget counts them, measured on the finished messages."""
    return TOKENS_PER_PROMPT + sum(count.message(m.content) for m in messages)


def ten_turns_of_5kb() -> list[Turn]:
    """The attack's history: ten turns of 5 KB each (a 1 KB question, a 4 KB answer)."""
    return [
        Turn(f"question {n} " + "lorem ipsum " * 85, f"answer {n} " + "dolor sit amet " * 270)
        for n in range(10)
    ]


def fitted(tokens: int, **kwargs: object) -> tuple[list[ChatMessage], list[Passage], bool]:
    passages = kwargs.pop("passages", [THIRD, SECOND, BEST])  # best last, as shaped
    prompt = fit_prompt(
        QUESTION,
        passages,  # type: ignore[arg-type]
        language="en",
        budget=budget(tokens),
        **kwargs,  # type: ignore[arg-type]
    )
    assert prompt.tokens <= tokens
    assert total(prompt.messages, budget(tokens)) <= tokens
    return prompt.messages, prompt.passages, prompt.cut


def test_a_ten_turn_5kb_history_is_cut_keeping_the_question_and_the_best_passage() -> None:
    history = ten_turns_of_5kb()
    messages, passages, cut = fitted(1500, history=history)
    assert cut
    # Every passage stayed (they come before history); the question is whole, twice.
    assert passages == [THIRD, SECOND, BEST]
    assert messages[-1].content.count(QUESTION) == 2
    assert BEST.text in messages[-1].content
    # Only the newest turns are left, in their order, and whole.
    kept = messages[PREAMBLE:-1]
    assert 0 < len(kept) < 2 * len(history)
    shown = [(kept[i].content, kept[i + 1].content) for i in range(0, len(kept), 2)]
    assert shown == [(t.question, t.answer) for t in history[-len(shown) :]]


def test_the_newest_turn_is_cut_short_when_it_alone_does_not_fit() -> None:
    history = ten_turns_of_5kb()
    whole = len(build_messages(QUESTION, [THIRD, SECOND, BEST], language="en")) - 1
    tight = total(build_messages(QUESTION, [THIRD, SECOND, BEST], language="en"), budget(0))
    messages, _, cut = fitted(tight + 300, history=history)
    assert cut
    question, answer = messages[whole : whole + 2]
    assert question.content.startswith("question 9 ")
    assert answer.content.startswith("answer 9 ")
    assert len(answer.content) < len(history[-1].answer)


def test_lowest_ranked_passages_go_after_the_history() -> None:
    history = ten_turns_of_5kb()
    room = total(build_messages(QUESTION, [SECOND, BEST], language="en"), budget(0))
    messages, passages, cut = fitted(room + 2, history=history)
    assert cut
    assert passages == [SECOND, BEST]  # the third-ranked went; the order is kept
    assert len(messages) == PREAMBLE + 1  # no earlier turn is left
    assert THIRD.text.strip() not in messages[-1].content


def test_the_best_passage_is_cut_short_rather_than_left_out() -> None:
    long_best = Passage(1, 10, 100, "vacation.txt", "Every employee receives days. " * 400)
    frame = total(build_messages(QUESTION, [], language="en"), budget(0))
    _, passages, cut = fitted(frame + MIN_PASSAGE_TOKENS + 20, passages=[SECOND, long_best])
    assert cut
    (only,) = passages
    assert only.ref == 1
    assert long_best.text.startswith(only.text)
    assert 0 < len(only.text) < len(long_best.text)


def test_the_clients_instructions_are_cut_before_passages() -> None:
    instructions = "Answer in the voice of a pirate. " * 200
    room = total(build_messages(QUESTION, [THIRD, SECOND, BEST], language="en"), budget(0))
    messages, passages, cut = fitted(room + 100, client_instructions=instructions)
    assert cut
    assert passages == [THIRD, SECOND, BEST]
    assert "pirate" in messages[0].content
    assert len(messages[0].content) < len(instructions)


def test_a_prompt_within_the_budget_is_the_uncut_one() -> None:
    history = [Turn("Who are you?", "I am Cairn.")]
    passages = [THIRD, SECOND, BEST]
    prompt = fit_prompt(
        QUESTION,
        passages,
        language="en",
        budget=budget(100_000),
        history=history,
        client_instructions="Be terse.",
    )
    assert not prompt.cut
    assert prompt.messages == build_messages(
        QUESTION, passages, language="en", history=history, client_instructions="Be terse."
    )


def test_a_question_too_long_for_the_context_is_422() -> None:
    question = "vacation " * 2000
    with pytest.raises(QuestionTooLong) as refused:
        fit_prompt(question, [BEST], language="en", budget=budget(3000))
    assert refused.value.status_code == 422
    assert refused.value.code == "question_too_long"


def test_the_estimate_budget_keeps_prompts_inside_it() -> None:
    # Without a tokenizer (the openai backend) the estimate counts; the cut is the same.
    estimate = TokenBudget(1200, estimate_tokens, "estimate")
    prompt = fit_prompt(
        QUESTION, [THIRD, SECOND, BEST], language="en", budget=estimate, history=ten_turns_of_5kb()
    )
    assert prompt.cut
    used = TOKENS_PER_PROMPT + sum(
        estimate_tokens(m.content) + TOKENS_PER_MESSAGE for m in prompt.messages
    )
    assert used <= 1200


def test_passages_render_as_before() -> None:
    # The budget counts passage blocks alone; the rendering they are joined into is unchanged.
    assert render_passages([BEST, SECOND]) == (
        "<passages>\n"
        '<passage number="1" title="vacation.txt">\n'
        "Every employee receives twenty five days per year.\n"
        "</passage>\n"
        '<passage number="2" title="parking.txt">\n'
        "Parking permits are issued by the facilities desk.\n"
        "</passage>\n"
        "</passages>"
    )
