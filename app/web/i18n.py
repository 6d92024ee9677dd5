"""UI languages: message catalogues (app/web/locales/*.json) and the choice of one per request.

The choice: the `cairn_lang` cookie (the switch) if it names a catalogue, else the first
supported language in `Accept-Language` by quality, else English. Every UI string comes from a
catalogue; templates and scripts hold keys only.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from starlette.requests import Request

from app.chat.language import Language
from app.chat.states import STATE_LABEL
from app.web.session import LANG_COOKIE

LOCALES_DIR = Path(__file__).parent / "locales"
LANGUAGES = ("en", "zh-Hans")
DEFAULT_LANGUAGE = "en"


# The answer language whose words a UI language shows for what chat itself says.
_ANSWER_LANGUAGE: dict[str, Language] = {"en": "en", "zh-Hans": "zh"}


@cache
def catalogue(language: str) -> dict[str, str]:
    """The messages of one language (English fills any key a translation lacks). An answer's
    state labels (`js.state.*`) are chat's own words (app/chat/states.py), the ones `cairn ask`
    and `/v1` print, so that every client says the same thing of the same answer."""
    messages: dict[str, str] = json.loads((LOCALES_DIR / "en.json").read_text("utf-8"))
    if language != "en":
        messages = {**messages, **json.loads((LOCALES_DIR / f"{language}.json").read_text("utf-8"))}
    spoken = _ANSWER_LANGUAGE.get(language, "en")
    messages.update({f"js.state.{state}": words[spoken] for state, words in STATE_LABEL.items()})
    return messages


def _from_accept_language(header: str) -> str | None:
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")[:32]):
        fields = part.strip().split(";")
        tag = fields[0].strip().lower()
        quality = 1.0
        for field in fields[1:]:
            name, _, value = field.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag:
            ranked.append((-quality, position, tag))
    for negative_quality, _, tag in sorted(ranked):
        if negative_quality >= 0:
            break
        if tag == "zh" or tag.startswith(("zh-hans", "zh-cn", "zh-sg", "zh-")):
            return "zh-Hans"
        if tag == "en" or tag.startswith("en-") or tag == "*":
            return "en"
    return None


def language_of(request: Request) -> str:
    """The UI language for this request."""
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    return _from_accept_language(request.headers.get("accept-language", "")) or DEFAULT_LANGUAGE


class Translator:
    """`t(key, **values)` for one language; a missing key shows as the key (and a test fails)."""

    def __init__(self, language: str) -> None:
        self.language = language
        self.messages = catalogue(language)

    def __call__(self, key: str, **values: object) -> str:
        text = self.messages.get(key, key)
        return text.format(**values) if values else text

    def reason(self, code: str | None, message: str | None) -> str:
        """A failure in this language: the catalogue's words for its code, else the server's."""
        return self.messages.get(f"reason.{code}") or message or code or ""

    def script_messages(self) -> dict[str, str]:
        """The messages the page's script uses (keys starting with `js.`)."""
        return {k: v for k, v in self.messages.items() if k.startswith("js.")}
