"""What a reader is told an answer is: one of three states (and a fourth only where an
operator turned the check off or down), derived from the faithfulness check's outcome.

- `answered`: the model's own words, checked against the passages they cite, with their
  supporting quote;
- `quoted`: the model's answer could not be checked, so the documents' own sentence closest to
  the question is shown instead (evidence, not a vouched answer; never "no passage answers");
- `not_found`: nothing the reader may see answers it (nothing relevant; the model said so; or
  its answer failed the check and no sentence of the passages is about the question,
  `dropped`);
- `unverified`: the model's words, not checked (`chat.unsupported_answer = off`) or failing
  the check where the operator chose `flag`: only ever where an operator turned the check
  off or down.

The state is a function of what is stored with each turn (`check`, `grounded`), so the live
answer, the history, the API, `/v1` and `cairn ask` all say the same thing for the same turn.
"""

from __future__ import annotations

from typing import Literal

from app.chat.language import Language

AnswerState = Literal["answered", "quoted", "not_found", "unverified"]

# How every client heads an answer: `cairn ask`, `/v1` (plain-text clients) and the web page,
# whose catalogues take these as `js.state.*` (app/web/i18n.py).
STATE_LABEL: dict[AnswerState, dict[Language, str]] = {
    "answered": {
        "zh": "已核对：回答与所引文档一致",
        "en": "Checked: the answer agrees with the documents it cites",
        "other": "Checked: the answer agrees with the documents it cites",
    },
    "quoted": {
        "zh": "引用原文：模型的回答无法核对，以下是文档中的原句",
        "en": "Quoted: the model's answer could not be checked, so here is the documents' own "
        "sentence",
        "other": "Quoted: the model's answer could not be checked, so here is the documents' "
        "own sentence",
    },
    "not_found": {
        "zh": "未找到：您可查看的文档中没有答案",
        "en": "Not found: the documents you may see do not answer this",
        "other": "Not found: the documents you may see do not answer this",
    },
    "unverified": {
        "zh": "未核对：这个回答没有与文档核对，可能不准确",
        "en": "Not verified: this answer was not checked against the documents and may be wrong",
        "other": "Not verified: this answer was not checked against the documents and may be wrong",
    },
}


def state_of(check: str | None, grounded: bool | None) -> AnswerState | None:
    """The reader's state of an answer with this check outcome; None for an answer stored
    before the check was kept (nothing honest can be said of it)."""
    if check in ("supported", "regenerated"):
        return "answered"
    if check == "quoted":
        return "quoted"
    if check in ("refused", "dropped"):
        return "not_found"
    if check == "unsupported":
        return "unverified"
    if check == "unchecked":
        # Unchecked and not grounded: Cairn's own "nothing found" sentence, no model words.
        return "unverified" if grounded else "not_found"
    return None


def state_label(state: AnswerState, language: Language) -> str:
    return STATE_LABEL[state][language]
