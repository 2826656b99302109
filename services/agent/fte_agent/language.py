"""Which language a message is in: lingua, restricted to the supported languages and the ones
customers commonly write in, with a confidence floor for short texts."""

from __future__ import annotations

from functools import cache

from lingua import IsoCode639_1, Language, LanguageDetector, LanguageDetectorBuilder

# Besides the supported ones: what customers of a European/global SaaS write in, so a French or
# Japanese message is recognised as such (and handed to a person) instead of forced into English.
COMMON = (
    "en",
    "es",
    "de",
    "fr",
    "pt",
    "it",
    "nl",
    "pl",
    "tr",
    "ru",
    "uk",
    "ar",
    "he",
    "hi",
    "ja",
    "ko",
    "zh",
    "sv",
    "da",
)
# Below this confidence the text is too short or mixed to tell: it goes to the likeliest
# supported language, or to the default. An unsupported language is believed only above it, and
# only for a text that reads as a sentence (see `_reads_as_sentence`).
CONFIDENCE_FLOOR = 0.5


def _language(code: str) -> Language:
    return Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper()))


@cache
def _detector(codes: tuple[str, ...]) -> LanguageDetector:
    return (
        LanguageDetectorBuilder.from_languages(*(_language(c) for c in codes)).with_preloaded_language_models().build()
    )


class LanguageDetection:
    def __init__(self, supported: tuple[str, ...], default: str = "en") -> None:
        self.supported = supported
        self.default = default
        self._codes = tuple(sorted(set(COMMON) | set(supported)))
        self._detector = _detector(self._codes)

    def detect(self, text: str) -> tuple[str, float]:
        """(ISO 639-1 code, confidence)."""
        if sum(c.isalpha() for c in text) < 3:
            return self.default, 0.0
        values = self._detector.compute_language_confidence_values(text)
        if not values:
            return self.default, 0.0
        top = values[0]
        code = top.language.iso_code_639_1.name.lower()
        if top.value >= CONFIDENCE_FLOOR and (code in self.supported or _reads_as_sentence(text)):
            return code, top.value
        if code in self.supported:
            # A short text leans to the default unless the other language wins it clearly.
            default = next((v.value for v in values if v.language.iso_code_639_1.name.lower() == self.default), 0.0)
            if code == self.default or top.value >= 1.25 * default:
                return code, top.value
            return self.default, default
        # Not sure, and the likeliest is an unsupported language. A real sentence in one is
        # recognised with confidence (French, Portuguese: above 0.9); what is left here is a
        # typo-laden "can i talk to a humna", "agent pls" or a keyboard mash: the default.
        return self.default, top.value


def _reads_as_sentence(text: str) -> bool:
    """Enough words to tell a language by (three or more), or a script of its own (Japanese,
    Arabic, Cyrillic...: no keyboard mash of a Latin keyboard looks like it)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    latin = sum(1 for c in letters if c.isascii() or "\u00c0" <= c <= "\u024f")
    return len(text.split()) >= 3 or latin / len(letters) < 0.5
